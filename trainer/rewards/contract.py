"""Verifiers of what the request itself asks for: the contract a client states in its
parameters, not in its wording (issue "rewards from what the request itself asks").

- `structured_output_verifier`: response_format json_schema (the answer, whole, validates
  against the request's schema: types, required, enums, $ref) or json_object (exactly one
  JSON object);
- `tool_call_verifier`: `tools` (a provided function, arguments valid against its parameters
  schema, required ones present, none invented, string values grounded in the conversation;
  among a group's valid calls, the one accounting for less of the user's words scores less:
  `coverage`).

Plain callables like every reward source: one score in [0, 1] per candidate, None where the
request states no such contract (or states one that cannot be checked: a broken schema).
The schemas are checked with the `jsonschema` library (Draft 2020-12 unless "$schema" says
otherwise), each compiled once per prompt.
"""
from __future__ import annotations

import json
import re

from trainer.prompts import Candidate, Prompt, offered_functions, request_text, user_text
from trainer.rewards.grounding import copied, normalize, overlapping

# A whole-JSON answer that fails the schema still followed the format: it outranks prose,
# and stays far below a valid one (a DPO pair needs a margin of 0.3 by default).
PARSED_BUT_INVALID = 0.25
# A tool call with valid arguments, some of whose values appear nowhere in the conversation:
# scored between an invalid call and a fully grounded one.
UNGROUNDED_FLOOR = 0.5
# A call that is valid once its scalars are read as the schema's types ("24" for an integer,
# 24 for a string): the 135M model wrote every argument right and grounded but quoted the
# number in most of its calls (e2e loop, 2026-12-06), and a flat 0.25 put it level with calls
# of the wrong shape. It scores this share of what the typed call would: above any invalid
# call, below every valid one with the same grounding.
COERCIBLE = 0.7

# Among a group's valid calls, the one that accounts for more of what the user wrote (its
# argument values, the function's name and description) keeps its score; one that accounts
# for less loses up to this share. Grounding alone ranked calls of the wrong function first
# whenever their fewer arguments were easier to copy: bench-lift cycle 1 (2026-12-07) chose
# log_workout(activity="Cab", minutes=4) for "We are 4: we need a cab from Central Station to
# Porto." over order_taxi, and send_invoice(customer, amount) for a hotel room for Omar Haddad.
COVERAGE_WEIGHT = 0.3
VALUE_WORDS = 3  # request words one argument value can account for (see `coverage`)
# Words that say nothing about which call a request wants.
_STOP = frozenset("""a an the and or but of to for from in on at by with as into onto per via is are was were be been
am do does did i we you he she it they me us him her them my our your his its their this that these those there
here please can could would will shall should may might must need needs want wants like get give make let
just also some any all each every what which who whom whose when where how why if then than so not no yes
""".split())

_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


def _validator(schema: object):
    """A jsonschema validator for `schema`, or None when the schema itself is not valid."""
    from jsonschema import exceptions, validators

    if not isinstance(schema, dict):
        return None
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except exceptions.SchemaError:
        return None
    return cls(schema)


def _whole_json(text: str) -> tuple[bool, object]:
    """(parsed, value) of an answer that is JSON and nothing else (a ```json fence allowed)."""
    t = text.strip()
    if t.startswith("```"):
        t = re.sub(r"^```[ \t]*(?:json)?\s*|\s*```$", "", t, flags=re.IGNORECASE)
    try:
        return True, json.loads(t)
    except ValueError:
        return False, None


def structured_output_verifier(prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
    rf = prompt.contract.get("response_format")
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind == "json_schema":
        spec = rf.get("json_schema") or {}
        validator = _validator(spec.get("schema") if isinstance(spec, dict) else None)
        if validator is None:
            return [None] * len(candidates)
        out: list[float | None] = []
        for c in candidates:
            parsed, value = _whole_json(c.text)
            out.append(0.0 if not parsed else 1.0 if validator.is_valid(value) else PARSED_BUT_INVALID)
        return out
    if kind == "json_object":
        out = []
        for c in candidates:
            parsed, value = _whole_json(c.text)
            out.append(1.0 if parsed and isinstance(value, dict) else PARSED_BUT_INVALID if parsed else 0.0)
        return out
    return [None] * len(candidates)


def _functions(prompt: Prompt) -> dict[str, dict]:
    """name -> parameters schema of the request's function tools."""
    empty = {"type": "object", "properties": {}}
    return {fn["name"]: fn["parameters"] if isinstance(fn.get("parameters"), dict) else empty
            for fn in offered_functions(prompt)}


def calls_of(candidate: Candidate) -> list[dict]:
    """The candidate's tool calls: the answer's own, or Hermes <tool_call> blocks in its text
    (what a model writes when vLLM ran without a tool-call parser)."""
    if candidate.tool_calls:
        return candidate.tool_calls
    calls = []
    for block in _TOOL_CALL_RE.findall(candidate.text):
        try:
            obj = json.loads(block)
        except ValueError:
            continue
        if isinstance(obj, dict) and "name" in obj:
            calls.append({"name": obj["name"], "arguments": json.dumps(obj.get("arguments", {}))})
    return calls


def _ungrounded(args: dict, schema: dict, conversation: str) -> tuple[int, int]:
    """(values, of which not found in the conversation): strings as written (an empty one is
    never found), numbers by value (45 in "$45.00"; a skeleton's 0 left unfilled is not). A
    value an enum or a const fixes, or one of a format the model must produce (a date, a
    URI), is not asked to be found."""
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    total = missing = 0
    for key, value in args.items():
        spec = props.get(key) if isinstance(props.get(key), dict) else {}
        if "enum" in spec or "const" in spec or "format" in spec:
            continue
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            total += 1
            missing += not copied(value, conversation)
        elif isinstance(value, dict):
            t, m = _ungrounded(value, spec, conversation)
            total, missing = total + t, missing + m
    return total, missing


def _checked_args(call: dict, functions: dict[str, dict]) -> tuple[float, dict | None, dict]:
    """(score so far, arguments, schema): 0 for a function never offered or arguments that are
    no JSON object, PARSED_BUT_INVALID for arguments its schema refuses even read as its
    types; else 1 (valid) or COERCIBLE (valid once read as its types) with the arguments."""
    schema = functions.get(call.get("name"))
    if schema is None:
        return 0.0, None, {}  # a function the request never offered
    try:
        args = json.loads(call.get("arguments") or "{}")
    except ValueError:
        return 0.0, None, schema
    if not isinstance(args, dict):
        return 0.0, None, schema
    # None invented: a key the schema does not declare fails, unless it explicitly allows extras.
    strict = dict(schema)
    if isinstance(schema.get("properties"), dict) and "additionalProperties" not in schema:
        strict["additionalProperties"] = False
    validator = _validator(strict)
    if validator is None:
        return 0.0, None, schema
    if validator.is_valid(args):
        return 1.0, args, schema
    coerced = _coerced(args, schema)
    if coerced is None or not validator.is_valid(coerced):
        return PARSED_BUT_INVALID, None, schema
    return COERCIBLE, coerced, schema


def _score_call(call: dict, functions: dict[str, dict], conversation: str) -> float:
    factor, args, schema = _checked_args(call, functions)
    if args is None:
        return factor
    total, missing = _ungrounded(args, schema, conversation)
    return factor * (1.0 if not total else UNGROUNDED_FLOOR + (1 - UNGROUNDED_FLOOR) * (1 - missing / total))


def _coerced(args: dict, schema: dict) -> dict | None:
    """`args` with each top-level scalar read as its declared type where that loses nothing
    ("24" -> 24 for an integer, "4.5" -> 4.5 for a number, 24 -> "24" for a string); None
    when nothing changes."""
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    out, changed = dict(args), False
    for key, value in args.items():
        want = (props.get(key) or {}).get("type") if isinstance(props.get(key), dict) else None
        new = value
        if want in ("integer", "number") and isinstance(value, str):
            try:
                num = float(value.strip())
            except ValueError:
                continue
            new = int(num) if want == "integer" and num.is_integer() else num if want == "number" else value
        elif want == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
            new = str(value)
        if new is not value:
            out[key], changed = new, True
    return out if changed else None


def _content_words(text: str) -> set[str]:
    """Casefolded words and numbers of `text` (underscores split: order_taxi is order, taxi),
    without stop words, a plural's s dropped: how coverage compares the request and a call."""
    words = re.findall(r"[^\W_]+", text.casefold())
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words
            if w not in _STOP and (len(w) > 1 or w.isdigit())}  # not the s of "what's"


def _number_words(value) -> str:
    """A number as the words a request would write it with: 129.0 as 129, not 129 0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def coverage(call: dict, function: dict, said: str) -> float:
    """Share of the user's content words the call accounts for: in its argument values (its
    scalars, nested ones too), its function's name or description. 0 for a request with none."""
    want = _content_words(said)  # the user's words (prompts.user_text)
    if not want:
        return 0.0
    try:
        args = json.loads(call.get("arguments") or "{}")
    except ValueError:
        args = {}
    covered = want & _content_words(f"{function.get('name', '')} {function.get('description') or ''}")
    stack = [args]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack += list(v.values())
        elif isinstance(v, list):
            stack += v
        elif not isinstance(v, bool) and v is not None:
            # At most VALUE_WORDS words a value: one argument stuffed with the whole request
            # (log_workout(activity="Cab from Central Station to Porto") in a lift cycle,
            # 2026-12-07) accounts for no more of it than a name or a place does.
            covered |= set(sorted(want & _content_words(_number_words(v)))[:VALUE_WORDS])
    return len(covered) / len(want)


def calls_grounded(prompt: Prompt, candidate: Candidate) -> bool:
    """Every call of `candidate` is of an offered function with valid arguments (typed as
    its schema says, or read so), each value that must come from the conversation found
    there, and no argument's text another's again (grounding.overlapping): what a pair's
    chosen call must be (trainer/pairs.py). True for no calls."""
    functions = _functions(prompt)
    conversation = _conversation(prompt)
    for call in calls_of(candidate):
        _, args, schema = _checked_args(call, functions)
        if args is None or _ungrounded(args, schema, conversation)[1]:
            return False  # unknown function, invalid arguments, or a value found nowhere
        if overlapping(list(args.values())):
            return False  # pickup and destination both "Austin for 3 people"
    return True


def _conversation(prompt: Prompt) -> str:
    return normalize(request_text(prompt) + "\n" + "\n".join(
        str(m.get("content") or "") for m in prompt.messages if m.get("role") == "tool"))


def tool_call_verifier(prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
    functions = _functions(prompt)
    if not functions:
        return [None] * len(candidates)
    choice = prompt.contract.get("tool_choice")
    forced = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if choice == "none":
        return [None] * len(candidates)
    must_call = choice == "required" or forced is not None
    conversation = _conversation(prompt)
    described = {fn["name"]: fn for fn in offered_functions(prompt)}
    said = user_text(prompt)
    out: list[float | None] = []
    covered: list[float | None] = []  # per candidate: the mean coverage of its valid calls
    for c in candidates:
        calls = calls_of(c)
        if not calls:
            # An answer in words may be right when calling is optional: no opinion then.
            out.append(0.0 if must_call else None)
            covered.append(None)
            continue
        scores = [0.0 if forced and call.get("name") != forced else _score_call(call, functions, conversation)
                  for call in calls]
        out.append(sum(scores) / len(scores))
        valid = [coverage(call, described.get(call.get("name"), {}), said)
                 for call, sc in zip(calls, scores) if sc > PARSED_BUT_INVALID]
        covered.append(sum(valid) / len(valid) if valid else None)
    # Relative to the group's best coverage: a lone call, or the call that accounts for the
    # most of the request, keeps its score.
    best = max((cv for cv in covered if cv is not None), default=0.0)
    if best > 0:
        out = [sc if sc is None or cv is None else sc * (1 - COVERAGE_WEIGHT * (1 - cv / best))
               for sc, cv in zip(out, covered)]
    return out
