"""Label-free reward sources and their ensemble.

A reward source is a plain callable `(prompt, candidates) -> list[float | None]`: one score
in [0, 1] per candidate, or None where the source has no opinion. `ensemble` combines them
as a weighted mean of the opinions given.

Sources here (no model needed): `json_verifier` (extraction prompts), `sql_verifier`
(text-to-SQL prompts: the query runs on the prompt's schema in DuckDB), `constraint_verifier`
(format and length the prompt states), `agreement` (self-consistency across samples) and
`user_feedback`. The LLM judge of a whole group is `trainer.judge.make_relative_judge`.
"""
from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol


@dataclass
class Prompt:
    prompt_id: str                   # completion_id of the logged request
    messages: list[dict]             # the bare request, as sent by the client
    task: str | None = None
    feedback: list[dict] = field(default_factory=list)  # [{"kind", "value", "choice_index"}]
    served: str | None = None        # the answer the client got (choice 0)

    @property
    def text(self) -> str:
        return "\n".join(_content_text(m.get("content")) for m in self.messages if m.get("role") == "user")


@dataclass
class Candidate:
    text: str
    strategy: str                    # plain | scaffold | served | correction


class RewardSource(Protocol):
    def __call__(self, prompt: Prompt, candidates: list[Candidate]) -> list[float | None]: ...


def _content_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


# "Extract the fields customer, item, quantity and total from ..." -> [customer, item, quantity, total]
_FIELDS_RE = re.compile(r"extract\s+(?:the\s+)?(?:fields?|keys?)\s*:?\s*(.+?)(?:\s+(?:from|as|in|into)\b|[.:\n])",
                        re.IGNORECASE)


def asked_keys(text: str) -> list[str] | None:
    """The JSON keys an extraction-style prompt asks for, or None if it is not one."""
    m = _FIELDS_RE.search(text)
    if not m:
        return None
    keys = [k.strip(" `'\"") for k in re.split(r",|\band\b", m.group(1))]
    keys = [k for k in keys if re.fullmatch(r"[A-Za-z_][\w ]{0,40}", k)]
    return keys or None


def extract_json_object(text: str) -> tuple[dict | None, str]:
    """The JSON object between the first '{' and the last '}', and the text left around it
    (markdown code fences removed)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None, text
    try:
        obj = json.loads(text[start : end + 1])
    except ValueError:
        return None, text
    if not isinstance(obj, dict):
        return None, text
    rest = _FENCE_RE.sub("", text[:start] + text[end + 1 :])
    return obj, rest.strip()


_FENCE_RE = re.compile(r"```[ \t]*(?:json)?", re.IGNORECASE)

# What wrapping the object costs. Chatter must cost more than the min_margin of a DPO pair
# (0.3): otherwise a chatty answer with every field right and the same answer bare make no
# pair, and the tuned model kept writing chatter after the JSON (NOTES.md). A lone ```json
# fence is how many clients expect JSON, so it costs only a little.
CHATTER_PENALTY = 0.4
FENCE_PENALTY = 0.1


def score_extraction(answer: str, keys: list[str], source_text: str) -> float:
    """0.2 for one parseable object, +0.3 x share of asked keys present, +0.5 x share of those
    values found in the prompt (grounded, not invented), -0.05 per extra key; then -0.4 for
    any words around the object (the client asked for the object only) or -0.1 when the only
    thing around it is a markdown code fence."""
    obj, rest = extract_json_object(answer)
    if obj is None:
        return 0.0
    wanted = {k.lower() for k in keys}
    present = [k for k in obj if k.lower() in wanted]
    src = source_text.lower()
    grounded = _grounded(obj, present, src)
    score = 0.2 + 0.3 * len(present) / len(wanted) + 0.5 * len(grounded) / len(wanted)
    score -= 0.05 * (len(obj) - len(present))
    if rest:
        score -= CHATTER_PENALTY
    elif answer.strip()[:1] != "{":  # nothing but a fence around the object
        score -= FENCE_PENALTY
    return max(0.0, min(1.0, score))


def _grounded(obj: dict, keys: list[str], src: str) -> list[str]:
    """Keys whose value is copied from the text, as a field value and not the text itself:
    one value pasted into several keys counts once, and a value longer than a quarter of
    the prompt is a copied sentence, not a field (both seen from a 135M model exploring)."""
    out, used = [], set()
    for k in keys:
        v = obj[k]
        s = str(v).strip().lower() if v is not None else ""
        if s and s in src and len(s) <= max(24, len(src) // 4) and s not in used:
            out.append(k)
            used.add(s)
    return out


def json_verifier(prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
    """Verifier for extraction-style prompts; no opinion on other prompts."""
    keys = asked_keys(prompt.text)
    if keys is None:
        return [None] * len(candidates)
    return [score_extraction(c.text, keys, prompt.text) for c in candidates]


# -- SQL: the query must run against the schema the prompt gives ------------------------
SQL_TIMEOUT_S = 5.0
SQL_NO_PARSE, SQL_FAILS, SQL_RUNS = 0.1, 0.3, 1.0

_CREATE_TABLE_RE = re.compile(r"\bCREATE\s+(?:TEMP(?:ORARY)?\s+)?TABLE\b", re.IGNORECASE)
_ASKS_SQL_RE = re.compile(r"\b(?:sql|query|queries)\b", re.IGNORECASE)
_SQL_FENCE_RE = re.compile(r"```[ \t]*([\w-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_SQL_START_LINE_RE = re.compile(r"^[ \t]*(?:WITH|SELECT)\b", re.IGNORECASE | re.MULTILINE)
_SQL_START_ANY_RE = re.compile(r"\b(?:WITH|SELECT)\b")  # upper case only: "select" in prose is a verb


def schema_statements(text: str) -> list[str]:
    """The CREATE TABLE statements in a prompt, each up to its closing parenthesis."""
    out = []
    for m in _CREATE_TABLE_RE.finditer(text):
        depth, i = 0, text.find("(", m.end())
        if i < 0:
            break
        for j in range(i, len(text)):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            if depth == 0:
                out.append(text[m.start() : j + 1])
                break
    return out


def extract_sql(answer: str) -> str | None:
    """The SQL in an answer: a ```sql fence (or any fence), else a bare statement starting with
    SELECT or WITH up to its ';' or the first blank line."""
    fences = [(lang.lower(), body.strip()) for lang, body in _SQL_FENCE_RE.findall(answer) if body.strip()]
    for lang, body in fences:
        if "sql" in lang:
            return body
    if fences:
        return fences[0][1]
    m = _SQL_START_LINE_RE.search(answer) or _SQL_START_ANY_RE.search(answer)
    if not m:
        return None
    sql = re.split(r";|\n\s*\n", answer[m.start() :], maxsplit=1)[0]
    return sql.strip() or None


class _Watchdog:
    """Interrupts what a DuckDB connection runs once `timeout_s` has passed, for as long as
    the `with` block lasts. It keeps interrupting: DuckDB forgets an interrupt that comes
    between two statements, and the next statement would then run unbounded."""

    def __init__(self, con, timeout_s: float):
        self.con, self.timeout_s = con, timeout_s
        self._done = threading.Event()
        self.expired = False

    def _watch(self) -> None:
        if self._done.wait(self.timeout_s):
            return
        self.expired = True
        while True:
            self.con.interrupt()
            if self._done.wait(0.05):
                return

    def __enter__(self) -> "_Watchdog":
        self._thread = threading.Thread(target=self._watch, name="sql-watchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()  # never interrupt a connection after it is closed or reused


def _plain_create_table(ddl: str) -> bool:
    """True for `CREATE [OR REPLACE] [TEMP] TABLE [IF NOT EXISTS] name (columns...)` alone: the
    schema is untrusted text from a prompt, and a CREATE TABLE AS SELECT over range() (or a
    second statement hidden behind a parenthesis in a string or comment) would compute or
    store whatever it asks. DuckDB's own tokenizer knows what is a string or a comment."""
    import duckdb

    try:
        tokens = duckdb.tokenize(ddl)
    except duckdb.Error:
        return False
    ends = [off for off, _ in tokens[1:]] + [len(ddl)]
    words = [(ddl[off:end].strip(), kind) for (off, kind), end in zip(tokens, ends)
             if kind != duckdb.token_type.comment]
    head = [w.upper() for w, _ in words[:5]]
    for optional in ("OR", "REPLACE", "TEMP", "TEMPORARY"):
        if optional in head[1:3]:
            head.remove(optional)
    if head[:2] != ["CREATE", "TABLE"]:
        return False
    depth, closed = 0, False
    for text, kind in words:
        if closed:
            if text != ";":
                return False  # anything after the column list: AS SELECT, a second statement
        elif kind == duckdb.token_type.operator and text in ("(", ")"):
            depth += 1 if text == "(" else -1
            closed = depth == 0
        elif depth == 0 and (text.upper() == "AS" or text == ";"):
            return False  # CREATE TABLE t AS ..., or a statement with no column list
    return closed


def _sql_connection(schema: list[str], timeout_s: float = SQL_TIMEOUT_S):
    """An in-memory DuckDB with the prompt's tables (empty), or None when none of them load
    (or loading them takes longer than `timeout_s`). Prompts and answers are untrusted: no
    file or network access, no extension loading, and the settings are locked before any
    of their text runs."""
    import duckdb

    con = duckdb.connect(":memory:", config={"threads": 1, "memory_limit": "256MB",
                                             "enable_external_access": False,
                                             "autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False,
                                             "lock_configuration": True})
    loaded, pending = 0, [d for d in map(_to_duckdb_ddl, schema) if _plain_create_table(d)]
    # Tables may reference each other in any order: retry until a pass loads nothing new.
    with _Watchdog(con, timeout_s) as watchdog:
        while pending and not watchdog.expired:
            failed = []
            for ddl in pending:
                try:
                    con.execute(ddl)
                    loaded += 1
                except duckdb.Error:
                    failed.append(ddl)
            if len(failed) == len(pending):
                break
            pending = failed
    if not loaded or watchdog.expired:
        con.close()
        return None
    return con


def _to_duckdb_ddl(ddl: str) -> str:
    # Schemas in prompts are often SQLite or MySQL flavoured; these bits are all DuckDB minds.
    ddl = ddl.replace("`", '"')
    return re.sub(r"\bAUTO_?INCREMENT\b|\bUNSIGNED\b", "", ddl, flags=re.IGNORECASE)


def score_sql(answer: str, schema: list[str], timeout_s: float = SQL_TIMEOUT_S) -> float | None:
    """0 with no SQL, 0.1 if it does not parse, 0.3 if it parses but fails (unknown table or
    column, type error, timeout), 1.0 if it runs on the schema's empty tables. None when the
    schema itself does not load (no opinion): no plain CREATE TABLE in it runs, or loading
    takes longer than `timeout_s`."""
    import duckdb

    sql = extract_sql(answer)
    if sql is None:
        return 0.0
    con = _sql_connection(schema, timeout_s)  # one per candidate: an answer's DROP TABLE must not hurt the next
    if con is None:
        return None
    try:
        try:
            con.extract_statements(sql)
        except duckdb.Error:
            return SQL_NO_PARSE
        # Empty tables make most queries instant, but a cross join of range() does not.
        with _Watchdog(con, timeout_s):
            try:
                con.execute(sql).fetchmany(1)
                return SQL_RUNS
            except duckdb.Error:
                return SQL_FAILS
    finally:
        con.close()


def sql_verifier(prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
    """Verifier for text-to-SQL prompts (a CREATE TABLE schema and a request for a query);
    no opinion on other prompts."""
    text = _request_text(prompt)
    schema = schema_statements(text)
    if not schema or not _ASKS_SQL_RE.search(_CREATE_TABLE_RE.sub(" ", text)):
        return [None] * len(candidates)
    return [score_sql(c.text, schema) for c in candidates]


def _request_text(prompt: Prompt) -> str:
    """System and user text: a system prompt states schemas and formats as often as the user."""
    return "\n".join(_content_text(m.get("content")) for m in prompt.messages if m.get("role") in ("system", "user"))


# -- format and length constraints stated in the prompt ---------------------------------
_NUM_WORDS = {"a single": 1, "single": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
              "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_NUM = r"(\d+|a\s+single|single|one|two|three|four|five|six|seven|eight|nine|ten)"
_NEGATION_RE = re.compile(r"\b(?:no|not|don'?t|do\s+not|never|without|avoid)\b", re.IGNORECASE)
_BULLET_LINE_RE = re.compile(r"\s*(?:[-*•‣▪]|\d+[.)])\s+\S")
_NUMBER_ANSWER_RE = re.compile(r"[-+]?[$€£]?\d[\d,]*(?:\.\d+)?%?\.?")


def _n(s: str) -> int:
    s = re.sub(r"\s+", " ", s.lower())
    return int(s) if s.isdigit() else _NUM_WORDS[s]


def _words(text: str) -> list[str]:
    return re.findall(r"\w+(?:['’-]\w+)*", text)


def _sentences(text: str) -> int:
    return sum(1 for s in re.split(r"(?<=[.!?])\s+", text.strip()) if re.search(r"\w", s))


def _is_json(text: str) -> float:
    """1 for bare JSON, 0.5 for JSON in a code fence and nothing else, else 0."""
    t = text.strip()
    fenced = re.fullmatch(r"```[ \t]*(?:json)?[ \t]*\n?(.*?)\n?```", t, re.DOTALL | re.IGNORECASE)
    for body, credit in ((t, 1.0), (fenced.group(1) if fenced else None, 0.5)):
        if body is None:
            continue
        try:
            json.loads(body)
            return credit
        except ValueError:
            pass
    return 0.0


def _bullets(text: str, n: int | None) -> bool:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    bullets = sum(1 for ln in lines if _BULLET_LINE_RE.match(ln))
    # An intro line before the list is fine; a paragraph with one dash in it is not a list.
    return (bullets == n if n else bullets >= 2) and 2 * bullets >= len(lines)


def _has_letters(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


Check = Callable[[str], float]  # an answer -> how well it meets one constraint, in [0, 1]


def _max_words(n: int) -> tuple[str, Check]:
    if n == 1:
        return "one_word", lambda a: float(len(_words(a)) == 1)
    return f"max_words<={n}", lambda a: float(len(_words(a)) <= n)


def _min_words(n: int) -> tuple[str, Check]:
    return f"min_words>={n}", lambda a: float(len(_words(a)) >= n)


def _sentences_exactly(n: int) -> tuple[str, Check]:
    return f"sentences=={n}", lambda a: float(_sentences(a) == n)


def _sentences_at_most(n: int) -> tuple[str, Check]:
    return f"sentences<={n}", lambda a: float(_sentences(a) <= n)


def _max_chars(n: int) -> tuple[str, Check]:
    return f"max_chars<={n}", lambda a: float(len(a.strip()) <= n)


def _bullets_exactly(n: int) -> tuple[str, Check]:
    return f"bullets=={n}", lambda a: float(_bullets(a, n))


def _number_only(a: str) -> float:
    return float(bool(_NUMBER_ANSWER_RE.fullmatch(a.strip().strip("*`"))))


def _some_bullets(a: str) -> float:
    return float(_bullets(a, None))


def _lowercase(a: str) -> float:
    return float(_has_letters(a) and a == a.lower())


def _uppercase(a: str) -> float:
    return float(_has_letters(a) and a == a.upper())


def _yes_or_no(a: str) -> float:
    return float(bool(re.fullmatch(r"(?:yes|no)[.!]?", a.strip().strip("*").lower())))


_LIMIT = (r"(?:at\s+most|no\s+more\s+than|not\s+more\s+than|up\s+to|under|fewer\s+than|less\s+than"
          r"|maximum\s+of|max(?:imum)?|within)")
_JSON_ASKED = (r"\b(?:reply|respond|answer|output|return|format)\w*\s+(?:only\s+)?(?:in|as|with|using)\s+"
               r"(?:only\s+)?(?:a\s+|one\s+|valid\s+)*json\b|\bonly\s+(?:a\s+|one\s+|valid\s+)*json\b"
               r"|\bjson\s+only\b|\bin\s+json\s+format\b")
_NUMBER_ASKED = (r"\b(?:answer|reply|respond)\s+(?:only\s+)?with\s+(?:only\s+|just\s+)?(?:a|the|one)\s+"
                 r"(?:single\s+)?(?:final\s+)?(?:number|integer)\b"
                 r"|\b(?:only|just)\s+(?:the|a)\s+(?:final\s+)?(?:number|integer)\b"
                 r"|\bnumeric(?:al)?\s+answer\b|\bnumber\s+only\b")
# (pattern, skip when negated, match -> (label, check)), in order: a label found first wins.
_RULE_SPECS: list[tuple[str, bool, Callable[[re.Match], tuple[str, Check]]]] = [
    (rf"\b(?:{_LIMIT}|in|using)\s+{_NUM}\s+words?\b", False, lambda m: _max_words(_n(m[1]))),
    (rf"\b{_NUM}\s+words?\s+or\s+(?:less|fewer)\b", False, lambda m: _max_words(_n(m[1]))),
    (rf"\b{_NUM}[\s-]word\s+(?:answer|reply|response)\b", False, lambda m: _max_words(_n(m[1]))),
    (r"\bat\s+least\s+(\d+)\s+words\b", False, lambda m: _min_words(int(m[1]))),
    (rf"\b(?:in|with|using|write|give|use)\s+(?:exactly\s+|only\s+|just\s+)?{_NUM}\s+sentences?\b", False,
     lambda m: _sentences_exactly(_n(m[1]))),
    (rf"\b{_LIMIT}\s+{_NUM}\s+sentences?\b", False, lambda m: _sentences_at_most(_n(m[1]))),
    (rf"\b{_LIMIT}\s+(\d+)\s+(?:characters|chars)\b", False, lambda m: _max_chars(int(m[1]))),
    (_NUMBER_ASKED, False, lambda m: ("number", _number_only)),
    (_JSON_ASKED, True, lambda m: ("json", _is_json)),
    (rf"\b{_NUM}\s+bullet(?:[\s-]*points?|s)\b", True, lambda m: _bullets_exactly(_n(m[1]))),
    (r"\bbullet(?:ed)?[\s-]*(?:points?|list)\b|\bbullets\b", True, lambda m: ("bullets", _some_bullets)),
    (r"\blower[\s-]?case\b", True, lambda m: ("lowercase", _lowercase)),
    (r"\bno\s+capital(?:\s+letters|s)\b", False, lambda m: ("lowercase", _lowercase)),
    (r"\ball\s+caps\b|\ball\s+capital\s+letters\b|\bupper[\s-]?case\b", True, lambda m: ("uppercase", _uppercase)),
    (r"\b(?:answer|reply|respond)\w*\s+(?:only\s+)?(?:with\s+)?(?:a\s+)?(?:simple\s+)?[\"'“]?yes[\"'”]?"
     r"\s+or\s+[\"'“]?no\b", False, lambda m: ("yes_no", _yes_or_no)),
]
_CONSTRAINT_RULES = [(re.compile(p, re.IGNORECASE), guard, rule) for p, guard, rule in _RULE_SPECS]


def detect_constraints(text: str) -> list[tuple[str, Check]]:
    """The format and length constraints a prompt states, as (label, check) pairs; a check
    scores an answer in [0, 1]. "Do not use bullet points" states no bullet constraint."""
    found: dict[str, Check] = {}
    for pattern, guard, rule in _CONSTRAINT_RULES:
        for m in pattern.finditer(text):
            if guard and _negated(text, m.start()):
                continue
            label, check = rule(m)
            if label == "bullets" and any(k.startswith("bullets==") for k in found):
                continue  # "3 bullet points" already says more
            found.setdefault(label, check)
    return list(found.items())


def _negated(text: str, pos: int) -> bool:
    # A negation earlier in the same sentence, close before the match.
    window = re.split(r"[.!?;\n]", text[max(0, pos - 30) : pos])[-1]
    return bool(_NEGATION_RE.search(window))


def constraint_verifier(prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
    """Share of the prompt's stated format/length constraints an answer meets; no opinion
    when the prompt states none."""
    constraints = detect_constraints(_request_text(prompt))
    if not constraints:
        return [None] * len(candidates)
    return [sum(check(c.text) for _, check in constraints) / len(constraints) for c in candidates]


# -- agreement across samples ------------------------------------------------------------
_LAST_NUMBER_RE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def final_answer_key(text: str) -> str | None:
    """What two answers must share to count as the same answer: the parsed object's values
    for JSON, the last number for numeric answers, else the text without case, punctuation
    and extra spaces. None for an empty answer."""
    t = text.strip()
    if not t:
        return None
    obj, _ = extract_json_object(t)
    if obj is not None:
        return "json:" + json.dumps({str(k).strip().lower(): _norm_value(v) for k, v in obj.items()}, sort_keys=True)
    nums = _LAST_NUMBER_RE.findall(t)
    if nums:
        return "num:" + _norm_number(nums[-1])
    norm = " ".join(re.sub(r"[^\w\s]", " ", t.lower()).split())
    return "text:" + norm if norm else None


def _norm_number(s: str) -> str:
    x = float(s.replace(",", ""))
    return str(int(x)) if x.is_integer() else repr(x)


def _norm_value(v) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return _norm_number(str(v))
    if isinstance(v, str):
        s = v.strip()
        if re.fullmatch(r"[-+]?[$€£]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?", s):
            return _norm_number(s.lstrip("+$€£"))
        return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())
    return json.dumps(v, sort_keys=True).lower()


def agreement(prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
    """Self-consistency: each candidate's share of the OTHER candidates giving the same final
    answer. No opinion with fewer than 3 candidates (one other answer is no majority)."""
    if len(candidates) < 3:
        return [None] * len(candidates)
    keys = [final_answer_key(c.text) for c in candidates]
    others = len(candidates) - 1
    return [0.0 if k is None else (sum(1 for j, o in enumerate(keys) if o == k and j != i) / others)
            for i, k in enumerate(keys)]


def user_feedback(prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
    """What users said about the served answer; a correction is the best answer there is."""
    served = None
    for fb in prompt.feedback:
        if fb.get("choice_index", 0) != 0:
            continue
        kind, value = fb["kind"], fb["value"]
        if kind == "thumbs":
            served = 1.0 if value == "up" else 0.0
        elif kind == "rating":
            served = (float(value) - 1) / 4
    out: list[float | None] = []
    for c in candidates:
        if c.strategy == "served":
            out.append(served)
        elif c.strategy == "correction":
            out.append(1.0)
        else:
            out.append(None)
    return out


def ensemble(sources: dict[str, tuple[float, Callable]], prompt: Prompt,
             candidates: list[Candidate]) -> tuple[list[float | None], list[dict]]:
    """Weighted mean of the sources that gave an opinion. Returns (scores, per-source detail)."""
    per_source = {name: fn(prompt, candidates) for name, (w, fn) in sources.items() if w > 0}
    for name, s in per_source.items():
        if len(s) != len(candidates):  # zip would silently give a score to the wrong answer
            raise ValueError(f"reward source {name!r} gave {len(s)} scores for {len(candidates)} candidates")
    scores: list[float | None] = []
    detail: list[dict] = []
    for i in range(len(candidates)):
        opinions = {name: s[i] for name, s in per_source.items() if s[i] is not None}
        detail.append(opinions)
        total_w = sum(sources[n][0] for n in opinions)
        scores.append(sum(sources[n][0] * v for n, v in opinions.items()) / total_w if total_w else None)
    return scores, detail
