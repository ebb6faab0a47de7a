"""Task files for the lift benchmark: seeded generators, the JSONL format, and the gold wall.

A task file is JSONL, one case a line:

    {"task": "extract_orders", "messages": [{"role": "user", "content": "..."}],
     "gold": {"customer": "Maria Lopez", ...}, "metric": "json_fields"}

- `task`: a tag, reported per tag (and the tag a runner may send as request metadata);
- `messages`: the bare chat prompt, exactly what is sent to the gateway;
- `params` (optional): the request's contract, sent with it: `response_format`, `tools`,
  `tool_choice` (nothing that says how to sample);
- `gold`: used only to measure: an object for `json_fields`, a string for `exact` / `number`,
  `{"name", "arguments"}` for `tool_call`;
- `metric`: `json_fields` | `exact` | `number` | `tool_call` (defined in tests/bench/metrics.py);
- `family` (optional): the wording family, reported on its own; `tagged` (optional): whether
  the runner sends `metadata.task` with this case as traffic (half of the traffic does not:
  most clients never send a tag).
Other keys are allowed and ignored. `strip_gold(case)` is the only way a case becomes
traffic: it keeps `task`, `messages` and `params` and nothing else, so gold cannot reach the trainer.

`make_suite(seed)` builds every split the benchmark needs:
- traffic:      extraction prompts over the SEEN field sets in the TRAFFIC_FAMILIES wordings
                (one is a json_schema `response_format` with no keys in the words), replayed as
                production traffic;
- eval_seen:    held-out extraction prompts over the same field sets in every family, including
                HELD_OUT_FAMILY, a wording never sent as traffic (no prompt in traffic);
- eval_unseen:  extraction prompts over the UNSEEN field sets, never sent as traffic:
                transfer (docs/measurements.md: one optimizer made these worse, another better);
- tools_traffic / tools_eval: requests that offer three generated functions with typed
                parameters (`tools`, tool_choice auto); gold is the right call;
- math_traffic / math_eval: one-step and two-step arithmetic word problems (`number`);
- regression:   fixed general-knowledge prompts (`exact` / `number`) training must not damage.

Write the splits as files (generated at run time, not committed):

    .venv/bin/python -m tests.bench.tasks --out /tmp/tao-tasks --seed 0
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

METRICS = ("json_fields", "exact", "number", "tool_call")
PARAM_KEYS = ("response_format", "tools", "tool_choice")  # the contract (trainer.prompts.CONTRACT_KEYS)
ROLES = ("system", "user", "assistant")


# -- extraction -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldSet:
    name: str
    fields: tuple[str, ...]
    templates: tuple[str, ...]      # str.format templates over the field names
    pools: dict                     # field -> list of values, or a callable(rnd) -> value

    @property
    def task(self) -> str:
        return f"extract_{self.name}"


def _money(lo: int, hi: int):
    return lambda rnd: f"{rnd.randint(lo, hi)}.{rnd.randint(0, 99):02d}"


def _int(lo: int, hi: int):
    return lambda rnd: str(rnd.randint(lo, hi))


_PEOPLE = ["Maria Lopez", "John Smith", "Aiko Tanaka", "Omar Haddad", "Lena Fischer", "Ravi Patel",
           "Sofia Rossi", "Kwame Mensah", "Elena Petrova", "Lucas Martin", "Nora Jensen", "Diego Alvarez"]
_CITIES = ["Lisbon", "Oslo", "Nairobi", "Toronto", "Kyoto", "Valencia", "Krakow", "Dublin", "Lyon",
           "Porto", "Austin", "Melbourne"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]

# Gold values are written exactly as they appear in the text; numeric fields hold the bare
# number (the unit is in the field name or the text). The trainer scrubs PII from prompts,
# so nothing here looks like a phone, email or card number (a test checks scrub() is a no-op).
FIELD_SETS: dict[str, FieldSet] = {fs.name: fs for fs in [
    FieldSet("orders", ("customer", "item", "quantity", "total"), (
        "{customer} ordered {quantity} {item} for a total of {total} dollars.",
        "Order note: customer {customer}, {quantity} x {item}, total ${total}.",
        "Yesterday {customer} bought {quantity} {item}; the bill came to {total}.",
    ), {"customer": _PEOPLE, "item": ["lamps", "chairs", "notebooks", "coffee mugs", "desk fans", "backpacks",
                                      "umbrellas", "candles", "picture frames", "water bottles"],
        "quantity": _int(2, 9), "total": _money(10, 400)}),
    FieldSet("shipments", ("sender", "destination", "weight"), (
        "{sender} is shipping a {weight} kg parcel to {destination}.",
        "Shipment from {sender}: one crate, {weight} kg, bound for {destination}.",
        "A package weighing {weight} kg left the warehouse of {sender} for {destination} today.",
    ), {"sender": ["Northwind Traders", "Acme Supplies", "Blue Harbor Goods", "Summit Outfitters",
                   "Greenleaf Farms", "Atlas Machinery", "Silverline Textiles", "Red Oak Books"],
        "destination": _CITIES, "weight": _int(2, 90)}),
    FieldSet("bookings", ("guest", "hotel", "nights", "date"), (
        "{guest} booked {nights} nights at the {hotel} starting {date}.",
        "Reservation: {hotel}, guest {guest}, arriving {date} for {nights} nights.",
        "Please confirm that {guest} stays {nights} nights at the {hotel} from {date}.",
    ), {"guest": _PEOPLE, "hotel": ["Seaview Inn", "Grand Plaza", "Maple Lodge", "Harbor House",
                                    "Alpine Retreat", "Riverside Suites", "Old Mill Hotel", "Palm Court"],
        "nights": _int(2, 14), "date": lambda rnd: f"{rnd.choice(_MONTHS)} {rnd.randint(1, 28)}"}),
    FieldSet("people", ("name", "city", "age"), (
        "{name}, {age}, lives in {city}.",
        "Meet {name} from {city}, who is {age} years old.",
        "Member profile: {name} ({age}) recently moved to {city}.",
    ), {"name": _PEOPLE, "city": _CITIES, "age": _int(19, 78)}),
    FieldSet("events", ("event", "venue", "attendees"), (
        "The {event} will take place at {venue} with {attendees} guests expected.",
        "Reminder: {attendees} people signed up for the {event} at {venue}.",
        "{venue} hosts the {event} this weekend; {attendees} tickets were sold.",
    ), {"event": ["spring concert", "book fair", "chess tournament", "charity gala", "film night",
                  "science fair", "jazz festival", "food market"],
        "venue": ["City Hall", "Riverside Park", "the Grand Theater", "Union Square", "the Old Library",
                  "Harbor Arena", "Elm Street Gym", "the Botanical Garden"],
        "attendees": _int(20, 900)}),
    # -- unseen by default: never sent as traffic --
    FieldSet("recipes", ("dish", "servings", "minutes"), (
        "This {dish} recipe serves {servings} and takes {minutes} minutes.",
        "Cook {dish} in {minutes} minutes; enough for {servings} people.",
        "Tonight's menu: {dish} for {servings}, ready in {minutes} minutes.",
    ), {"dish": ["vegetable curry", "lentil soup", "mushroom risotto", "banana bread", "fish tacos",
                 "pancakes", "tomato pasta", "apple pie"],
        "servings": _int(2, 12), "minutes": _int(10, 120)}),
    FieldSet("repairs", ("device", "problem", "cost"), (
        "Repair ticket: {device} with a {problem}, quoted at ${cost}.",
        "The shop fixed a {problem} on my {device} and charged {cost} dollars.",
        "Customer brought in a {device}; issue: {problem}; estimate {cost}.",
    ), {"device": ["laptop", "tablet", "washing machine", "bicycle", "coffee maker", "printer",
                   "television", "vacuum cleaner"],
        "problem": ["cracked screen", "dead battery", "broken hinge", "leaking hose", "flat tire",
                    "burnt fuse", "stuck button", "loose cable"],
        "cost": _money(15, 350)}),
    FieldSet("flights", ("airline", "origin", "destination", "passengers"), (
        "{airline} flew {passengers} passengers from {origin} to {destination}.",
        "Flight log: {airline}, {origin} to {destination}, {passengers} on board.",
        "Yesterday's {airline} service from {origin} landed in {destination} with {passengers} passengers.",
    ), {"airline": ["SkyBridge Air", "Nordic Wings", "Coastal Airways", "Sunline", "Pacific Jet",
                    "Aurora Air"],
        "origin": _CITIES, "destination": _CITIES, "passengers": _int(40, 320)}),
]}
SEEN = ("orders", "shipments", "bookings", "people", "events")
UNSEEN = ("recipes", "repairs", "flights")

EXTRACT_PROMPT = "Extract the fields {fields} from the text below. Reply with only a JSON object.\nText: {text}"
# Wording families of an extraction request. `schema` states its keys only in a json_schema
# response_format. HELD_OUT_FAMILY is never sent as traffic: it measures transfer to wording
# the trainer never saw (and that its key parser does not read).
FAMILIES = {
    "fields": EXTRACT_PROMPT,
    "keys": "Return a JSON object with the keys {fields} for this message:\n{text}",
    "into_json": "Put the {fields_and} of this note into JSON.\n{text}",
    "schema": "Here is a note from our inbox:\n{text}",
    "held_out": "I need the {fields_and} out of the following as JSON, nothing else.\n{text}",
}
TRAFFIC_FAMILIES = ("fields", "keys", "into_json", "schema")
HELD_OUT_FAMILY = "held_out"
# Half the field sets' traffic carries `metadata.task`, the other half none.
TAGGED = frozenset(SEEN[::2])


def _draw(fs: FieldSet, rnd: random.Random) -> dict[str, str]:
    values: dict[str, str] = {}
    for f in fs.fields:
        pool = fs.pools[f]
        while True:
            v = pool(rnd) if callable(pool) else rnd.choice(pool)
            if v not in values.values():   # flights: origin != destination; no ambiguous gold
                break
        values[f] = v
    return values


def _and(words) -> str:
    words = list(words)
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else words[0]


def extraction_case(fs: FieldSet, template: int, rnd: random.Random, family: str = "fields") -> dict:
    gold = _draw(fs, rnd)
    text = fs.templates[template].format(**gold)
    text = text[0].upper() + text[1:]   # "{venue} hosts ..." with venue "the Old Library"
    prompt = FAMILIES[family].format(fields=", ".join(fs.fields), fields_and=_and(fs.fields), text=text)
    case = {"task": fs.task, "messages": [{"role": "user", "content": prompt}], "gold": gold,
            "metric": "json_fields", "family": family, "tagged": fs.name in TAGGED, "text": text}
    if family == "schema":
        case["params"] = {"response_format": {"type": "json_schema", "json_schema": {
            "name": fs.name, "schema": {"type": "object", "properties": {f: {"type": "string"} for f in fs.fields},
                                        "required": list(fs.fields), "additionalProperties": False}}}}
    return case


def extraction_cases(names, n: int, seed, exclude: set[str] = frozenset(),
                     families: tuple[str, ...] = ("fields",)) -> list[dict]:
    """n cases cycling over the field sets, their templates and the wording `families`; no
    prompt in `exclude` and no prompt twice."""
    rnd = random.Random(f"extract:{seed}")
    sets = [FIELD_SETS[name] for name in names]
    seen = set(exclude)
    out = []
    for i in range(n):
        fs = sets[i % len(sets)]
        # Field sets turn fastest, then wordings, then templates: every set meets every wording.
        family = families[(i // len(sets)) % len(families)]
        template = (i // (len(sets) * len(families))) % len(fs.templates)
        for _ in range(1000):
            case = extraction_case(fs, template, rnd, family)
            if _text(case) not in seen:
                break
        else:
            raise RuntimeError(f"field set {fs.name!r} ran out of distinct prompts")
        seen.add(_text(case))
        out.append(case)
    return out


# -- arithmetic word problems -------------------------------------------------------------------
_KIDS = ["Tom", "Anna", "Sam", "Mia", "Leo", "Zoe", "Ben", "Ivy", "Max", "Lily"]
_THINGS = ["apples", "marbles", "stickers", "pencils", "cookies", "books", "stamps", "shells"]


def _math_problem(kind: int, rnd: random.Random) -> tuple[str, int]:
    name, things = rnd.choice(_KIDS), rnd.choice(_THINGS)
    if kind == 0:
        a, b = rnd.randint(2, 30), rnd.randint(2, 30)
        return f"{name} has {a} {things} and buys {b} more. How many {things} does {name} have now?", a + b
    if kind == 1:
        a = rnd.randint(10, 50)
        b = rnd.randint(2, a - 2)
        return (f"{name} had {a} {things} and gave {b} of them to a friend. "
                f"How many {things} does {name} have left?", a - b)
    if kind == 2:
        a, b = rnd.randint(2, 12), rnd.randint(2, 9)
        return f"A box holds {a} {things}. How many {things} are in {b} boxes?", a * b
    if kind == 3:
        a, b = rnd.randint(3, 25), rnd.randint(2, 9)
        return f"{name} reads {a} pages every day. How many pages does {name} read in {b} days?", a * b
    if kind == 4:
        k, b = rnd.randint(2, 9), rnd.randint(2, 6)
        return (f"{k * b} {things} are shared equally among {b} children. "
                f"How many {things} does each child get?", k)
    a = rnd.randint(20, 60)
    b, c = rnd.randint(2, a // 2), rnd.randint(2, a // 2)
    return (f"A shop had {a} {things}. It sold {b} in the morning and {c} in the afternoon. "
            f"How many {things} are left?", a - b - c)


MATH_KINDS = 6
_NUM_TOKEN = re.compile(r"\d+")


def math_cases(n: int, seed, exclude: set[str] = frozenset()) -> list[dict]:
    """Word problems, kinds in turn; the answer never appears as a number in the prompt (so an
    answer that echoes the prompt scores nothing) and no prompt repeats or is in `exclude`."""
    rnd = random.Random(f"math:{seed}")
    seen = set(exclude)
    out = []
    for i in range(n):
        for _ in range(1000):
            text, answer = _math_problem(i % MATH_KINDS, rnd)
            if str(answer) not in _NUM_TOKEN.findall(text) and text not in seen:
                break
        else:
            raise RuntimeError("ran out of distinct word problems")
        seen.add(text)
        out.append({"task": "math", "messages": [{"role": "user", "content": text}], "gold": str(answer),
                    "metric": "number"})
    return out


# -- tool calling ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Function:
    name: str
    description: str
    params: dict[str, str]          # argument -> JSON type ("string", "integer", "number")
    templates: tuple[str, ...]      # requests in words, str.format over the arguments
    pools: dict                     # argument -> list of values, or a callable(rnd) -> value

    @property
    def fields(self) -> tuple[str, ...]:  # what _draw reads: the arguments are drawn like fields
        return tuple(self.params)

    def tool(self) -> dict:
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": {"type": "object", "properties": {k: {"type": t} for k, t in self.params.items()},
                           "required": list(self.params)}}}


_CURRENCIES = ["USD", "EUR", "JPY", "GBP", "CHF", "CAD", "NOK", "AUD"]
_ACTIVITIES = ["running", "cycling", "swimming", "yoga", "rowing", "hiking"]
_TOPICS = ["dentist appointment", "team meeting", "rent payment", "library books", "car service", "piano lesson"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

FUNCTIONS: dict[str, Function] = {f.name: f for f in [
    Function("book_room", "Book a hotel room.", {"guest": "string", "city": "string", "nights": "integer"}, (
        "Please book {nights} nights in {city} for {guest}.",
        "{guest} needs a hotel room in {city} for {nights} nights.",
    ), {"guest": _PEOPLE, "city": _CITIES, "nights": _int(2, 14)}),
    Function("send_invoice", "Send an invoice to a customer.", {"customer": "string", "amount": "number"}, (
        "Send {customer} an invoice for {amount} dollars.",
        "Bill {customer} {amount} for last month's work.",
    ), {"customer": _PEOPLE, "amount": _money(20, 900)}),
    Function("set_reminder", "Remind someone of something on a day.",
             {"person": "string", "day": "string", "topic": "string"}, (
        "Remind {person} on {day} about the {topic}.",
        "On {day}, {person} must not forget the {topic}: set a reminder.",
    ), {"person": _PEOPLE, "day": _DAYS, "topic": _TOPICS}),
    Function("log_workout", "Record a workout.", {"activity": "string", "minutes": "integer"}, (
        "I did {minutes} minutes of {activity} today, log it.",
        "Log a workout: {activity}, {minutes} minutes.",
    ), {"activity": _ACTIVITIES, "minutes": _int(10, 95)}),
    Function("convert_currency", "Convert an amount between currencies.",
             {"amount": "number", "source": "string", "target": "string"}, (
        "How much is {amount} {source} in {target}?",
        "Convert {amount} {source} to {target}, please.",
    ), {"amount": _int(5, 5000), "source": _CURRENCIES, "target": _CURRENCIES}),
    Function("order_taxi", "Order a taxi.", {"pickup": "string", "destination": "string", "passengers": "integer"}, (
        "Get a taxi from {pickup} to {destination} for {passengers} people.",
        "We are {passengers}: we need a cab from {pickup} to {destination}.",
    ), {"pickup": ["the airport", "Central Station", "City Hall", "the harbor"], "destination": _CITIES,
        "passengers": _int(1, 6)}),
]}


def tool_case(fn: Function, template: int, rnd: random.Random) -> dict:
    args = _draw(fn, rnd)  # type: ignore[arg-type]  (fields and pools, like a FieldSet)
    text = fn.templates[template].format(**args)
    offered = [fn] + rnd.sample([f for f in FUNCTIONS.values() if f.name != fn.name], 2)
    rnd.shuffle(offered)
    gold_args = {k: (int(v) if fn.params[k] == "integer" else float(v) if fn.params[k] == "number" else v)
                 for k, v in args.items()}
    return {"task": f"tool_{fn.name}", "messages": [{"role": "user", "content": text}],
            "params": {"tools": [f.tool() for f in offered], "tool_choice": "auto"},
            "gold": {"name": fn.name, "arguments": gold_args}, "metric": "tool_call", "family": "tools",
            "tagged": template == 0}


def tool_cases(n: int, seed, exclude: set[str] = frozenset()) -> list[dict]:
    """n requests cycling over the functions and their wordings; no prompt twice or in `exclude`."""
    rnd = random.Random(f"tools:{seed}")
    fns = list(FUNCTIONS.values())
    seen, out = set(exclude), []
    for i in range(n):
        fn = fns[i % len(fns)]
        for _ in range(1000):
            case = tool_case(fn, (i // len(fns)) % len(fn.templates), rnd)
            if _text(case) not in seen:
                break
        else:
            raise RuntimeError(f"function {fn.name!r} ran out of distinct requests")
        seen.add(_text(case))
        out.append(case)
    return out


# -- regression: general prompts training must not damage ----------------------------------------
# (prompt, gold, metric). `exact` golds may list alternatives with "|". No gold occurs in its
# own prompt (a test checks), so echoing the question earns nothing.
REGRESSION = [
    ("What is the capital of France? Answer with one word.", "Paris", "exact"),
    ("What is the capital of Japan? Answer with one word.", "Tokyo", "exact"),
    ("What is the capital of Italy? Answer with one word.", "Rome", "exact"),
    ("What is the capital of Germany? Answer with one word.", "Berlin", "exact"),
    ("What is the capital of Spain? Answer with one word.", "Madrid", "exact"),
    ("What color is the sky on a clear day? Answer with one word.", "blue", "exact"),
    ("What color is fresh grass? Answer with one word.", "green", "exact"),
    ("What color are ripe bananas? Answer with one word.", "yellow", "exact"),
    ("What color is fresh snow? Answer with one word.", "white", "exact"),
    ("What is the opposite of hot? Answer with one word.", "cold", "exact"),
    ("What is the opposite of up? Answer with one word.", "down", "exact"),
    ("What is the opposite of day? Answer with one word.", "night", "exact"),
    ("What is the largest planet in our solar system? Answer with one word.", "Jupiter", "exact"),
    ("Which planet is known as the Red Planet? Answer with one word.", "Mars", "exact"),
    ("What do bees make? Answer with one word.", "honey", "exact"),
    ("Which farm animal says moo? Answer with one word.", "cow|cows", "exact"),
    ("What is frozen water called? Answer with one word.", "ice", "exact"),
    ("Which gas do plants take in from the air for photosynthesis? Answer briefly.", "carbon dioxide|CO2",
     "exact"),
    ("What is the chemical symbol for gold? Answer briefly.", "Au", "exact"),
    ("Who wrote the play Romeo and Juliet? Answer briefly.", "Shakespeare", "exact"),
    ("On which continent is Egypt? Answer with one word.", "Africa", "exact"),
    ("What language is mainly spoken in Brazil? Answer with one word.", "Portuguese", "exact"),
    ("What is the tallest animal in the world? Answer with one word.", "giraffe|giraffes", "exact"),
    ("What is the plural of mouse? Answer with one word.", "mice", "exact"),
    ("What is the past tense of go? Answer with one word.", "went", "exact"),
    ("What do you call a baby dog? Answer with one word.", "puppy|puppies|pup", "exact"),
    ("What do you call a baby cat? Answer with one word.", "kitten|kittens", "exact"),
    ("Which is the largest ocean on Earth? Answer with one word.", "Pacific", "exact"),
    ("What is the main ingredient of guacamole? Answer with one word.", "avocado|avocados", "exact"),
    ("Which organ pumps blood through the human body? Answer with one word.", "heart", "exact"),
    ("What is the currency of Japan? Answer with one word.", "yen", "exact"),
    ("What is H2O commonly called? Answer with one word.", "water", "exact"),
    ("How many days are in a week? Answer with a number.", "7", "number"),
    ("How many legs does a spider have? Answer with a number.", "8", "number"),
    ("How many months are in a year? Answer with a number.", "12", "number"),
    ("How many hours are in a day? Answer with a number.", "24", "number"),
    ("How many minutes are in an hour? Answer with a number.", "60", "number"),
    ("How many sides does a triangle have? Answer with a number.", "3", "number"),
    ("How many wheels does a bicycle have? Answer with a number.", "2", "number"),
    ("In what year did World War II end? Answer with a number.", "1945", "number"),
]


def regression_cases() -> list[dict]:
    return [{"task": "regression", "messages": [{"role": "user", "content": p}], "gold": g, "metric": m}
            for p, g, m in REGRESSION]


# -- the suite -----------------------------------------------------------------------------------
def make_suite(seed: int = 0, n_traffic: int = 160, n_eval: int = 75, n_math_traffic: int = 80,
               n_math_eval: int = 60, n_tools_traffic: int = 60, n_tools_eval: int = 48,
               unseen: tuple[str, ...] = UNSEEN) -> dict[str, list[dict]]:
    """Every split of the benchmark. Extraction traffic and eval_seen use the field sets not in
    `unseen`; eval_unseen uses only those in `unseen`. Eval prompts never occur in traffic."""
    unknown = set(unseen) - FIELD_SETS.keys()
    if unknown:
        raise ValueError(f"unknown field sets {sorted(unknown)}; known: {sorted(FIELD_SETS)}")
    seen_sets = [name for name in FIELD_SETS if name not in unseen]
    if not seen_sets or not unseen:
        raise ValueError("need at least one seen and one unseen field set")
    all_families = (*TRAFFIC_FAMILIES, HELD_OUT_FAMILY)
    traffic = extraction_cases(seen_sets, n_traffic, f"{seed}:traffic", families=TRAFFIC_FAMILIES)
    math_traffic = math_cases(n_math_traffic, f"{seed}:traffic")
    tools_traffic = tool_cases(n_tools_traffic, f"{seed}:traffic")
    return {
        "traffic": traffic,
        "eval_seen": extraction_cases(seen_sets, n_eval, f"{seed}:eval", exclude={_text(c) for c in traffic},
                                      families=all_families),
        "eval_unseen": extraction_cases(list(unseen), n_eval, f"{seed}:unseen", families=all_families),
        "math_traffic": math_traffic,
        "math_eval": math_cases(n_math_eval, f"{seed}:eval", exclude={_text(c) for c in math_traffic}),
        "tools_traffic": tools_traffic,
        "tools_eval": tool_cases(n_tools_eval, f"{seed}:eval", exclude={_text(c) for c in tools_traffic}),
        "regression": regression_cases(),
    }


TRAFFIC_SPLITS = ("traffic", "math_traffic", "tools_traffic")


def strip_gold(case: dict) -> dict:
    """What may be sent as traffic: the task tag, a copy of the bare prompt and of the request's
    contract (params). Nothing else."""
    sent = {"task": case["task"], "messages": copy.deepcopy(case["messages"])}
    if case.get("params"):
        sent["params"] = copy.deepcopy(case["params"])
    return sent


def _text(case: dict) -> str:
    return "\n".join(m["content"] for m in case["messages"])


# -- JSONL ---------------------------------------------------------------------------------------
class TaskFileError(ValueError):
    pass


def validate_case(case) -> None:
    """Raise ValueError saying what is wrong with one case."""
    if not isinstance(case, dict):
        raise ValueError(f"a case must be a JSON object, got {type(case).__name__}")
    missing = [k for k in ("task", "messages", "gold", "metric") if k not in case]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    if not isinstance(case["task"], str) or not case["task"].strip():
        raise ValueError("`task` must be a non-empty string")
    msgs = case["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise ValueError("`messages` must be a non-empty list")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}] must be {{'role': one of {ROLES}, 'content': str}}")
    if msgs[-1]["role"] != "user":
        raise ValueError("the last message must be the user's")
    params = case.get("params", {})
    if not isinstance(params, dict) or set(params) - set(PARAM_KEYS):
        raise ValueError(f"`params` must be an object with only {PARAM_KEYS}")
    metric, gold = case["metric"], case["gold"]
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}, got {metric!r}")
    if metric == "tool_call":
        if not (isinstance(gold, dict) and isinstance(gold.get("name"), str) and isinstance(gold.get("arguments"), dict)):
            raise ValueError('tool_call needs `gold` as {"name": str, "arguments": object}')
        if not params.get("tools"):
            raise ValueError("tool_call needs `params.tools`: the functions the request offers")
    elif metric == "json_fields":
        if not isinstance(gold, dict) or not gold:
            raise ValueError("json_fields needs `gold` as a non-empty object")
        bad = [k for k, v in gold.items() if isinstance(v, bool) or not isinstance(v, (str, int, float))]
        if bad:
            raise ValueError(f"gold values must be strings or numbers: {bad}")
    else:
        if not isinstance(gold, str) or not gold.strip():
            raise ValueError(f"{metric} needs `gold` as a non-empty string")
        if metric == "number":
            from tests.bench.metrics import parse_number
            if parse_number(gold) is None:
                raise ValueError(f"number gold {gold!r} is not a number")


def write_jsonl(path, cases: list[dict]) -> Path:
    path = Path(path)
    for i, case in enumerate(cases, 1):
        try:
            validate_case(case)
        except ValueError as e:
            raise TaskFileError(f"case {i}: {e}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for case in cases:
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path) -> list[dict]:
    """Cases of a task file; blank lines skipped; a bad line raises TaskFileError 'FILE:LINE: why'."""
    path = Path(path)
    cases = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                case = json.loads(line)
            except ValueError as e:
                raise TaskFileError(f"{path}:{lineno}: not JSON ({e})") from None
            try:
                validate_case(case)
            except ValueError as e:
                raise TaskFileError(f"{path}:{lineno}: {e}") from None
            cases.append(case)
    if not cases:
        raise TaskFileError(f"{path}: no cases")
    return cases


def write_suite(out_dir, suite: dict[str, list[dict]]) -> dict[str, Path]:
    return {name: write_jsonl(Path(out_dir) / f"{name}.jsonl", cases) for name, cases in suite.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="directory for <split>.jsonl files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-traffic", type=int, default=160)
    ap.add_argument("--n-eval", type=int, default=75)
    args = ap.parse_args(argv)
    suite = make_suite(args.seed, n_traffic=args.n_traffic, n_eval=args.n_eval)
    for name, path in write_suite(args.out, suite).items():
        print(f"{len(suite[name]):5d}  {path}")


if __name__ == "__main__":
    main()
