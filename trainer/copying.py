"""Schemas whose values can only be copied from the request: the `copy` exploration strategy.

The verifiers reward a field or an argument only when its value is found in the conversation
(trainer/rewards/grounding.py), and a pair's chosen answer must have every value found there
(trainer/pairs.py). The 135M model, guided to the right keys, still fills them with names and
places of its own (bench-lift, 2026-12-07: for 10 of 19 tool requests none of 21-25 candidates
was the right call; book_room(guest="Marea El Rana") for Omar Haddad). So `copy` asks vLLM's
structured outputs for the same object with each free string value one of the request's own
word spans and each number one of its numbers: every candidate is grounded, and what is left
to the model, and to the verifiers, is which span goes where. Values the request does not
spell out (a currency code for "dollars", a date for "Monday") cannot be written this way:
the other strategies still explore them.

`make bench-explore` (tests/bench/results/explore_guided.md; 2-core AVX-512 Xeon, base
SmolLM2-135M, n=4, the benchmark's traffic prompts, beside a lift run): 40 of 240 extraction
candidates with every field right against 6 guided and 0 unguided (9 of 30 requests had one,
against 3 and 0), 70 of 576 exactly right tool calls against 48 and 8, in about a third of the
unguided scaffold's time. The benchmark writes its gold values as they appear in the text
(99.8% of them are spans here), so real traffic will reach less of this.
"""
from __future__ import annotations

from trainer.prompts import Prompt, user_text
from trainer.rewards.grounding import echoes_a_name, numbers_in

MAX_SPAN_WORDS = 4   # "Central Station", "Ana María López": names and places are short
MAX_SPANS = 400      # a grammar of a few hundred alternatives compiles in milliseconds
_EDGE = "\"'()[]{}<>.,;:!?¡¿«»“”‘’$€£#*"


def spans(text: str) -> list[str] | None:
    """Every run of 1-MAX_SPAN_WORDS words of `text` that does not cross punctuation (so each
    is found in `text` as written, whitespace aside), in order, without repeats; None when
    there are more than MAX_SPANS (a long document: too many to enumerate)."""
    out: dict[str, None] = {}
    for line in text.splitlines():
        segment: list[str] = []
        for raw in line.split():
            word = raw.strip(_EDGE)
            starts, ends = raw[:1] in _EDGE, raw[-1:] in _EDGE
            if starts or not word:
                _add(segment, out)
                segment = []
            if word:
                segment.append(word)
            if ends or not word:
                _add(segment, out)
                segment = []
        _add(segment, out)
        if len(out) > MAX_SPANS:
            return None
    return list(out) or None


def _add(segment: list[str], out: dict[str, None]) -> None:
    for i in range(len(segment)):
        for n in range(1, min(MAX_SPAN_WORDS, len(segment) - i) + 1):
            out.setdefault(" ".join(segment[i:i + n]), None)


def copied_schema(schema: dict, words: list[str], numbers: list[float]) -> dict:
    """`schema` with each free string value (no enum, const, format or pattern of its own) one
    of `words`, each integer or number one of `numbers` (left free where the request has none),
    through objects and arrays. A list of types (a key asked for in words: any scalar) takes a
    span or a number."""
    if not isinstance(schema, dict) or {"enum", "const", "format", "pattern"} & set(schema):
        return schema
    kind = schema.get("type")
    nums = [int(x) if x.is_integer() else x for x in numbers]  # 4, not 4.0, as the request wrote it
    ints = [x for x in nums if isinstance(x, int)]
    if isinstance(kind, list):
        values = list(words) * ("string" in kind) + nums * bool({"number", "integer"} & set(kind))
        if not values:
            return schema
        return {k: v for k, v in schema.items() if k != "type"} | {"enum": values}
    if kind == "string":
        return {**schema, "enum": list(words)}
    if kind == "integer":
        return {**schema, "enum": ints} if ints else schema
    if kind == "number":
        return {**schema, "enum": nums} if nums else schema
    if kind == "object" and isinstance(schema.get("properties"), dict):
        return {**schema, "properties": {k: copied_schema(v, words, numbers) for k, v in schema["properties"].items()}}
    if kind == "array" and isinstance(schema.get("items"), dict):
        return {**schema, "items": copied_schema(schema["items"], words, numbers)}
    return schema


def copy_guide(schema: dict, prompt: Prompt, name: str) -> dict:
    """A json_schema response_format of `schema` with its values copied from `prompt`'s user
    text; {} when the text has no spans to offer or too many."""
    text = user_text(prompt)
    words = spans(text)
    # A span that only names a field ("event" in "Put the event, venue and attendees ... into
    # JSON") is the question, not a value: the verifiers do not count it as found either.
    names = _property_names(schema)
    words = [w for w in words or () if not echoes_a_name(w, names)]
    if not words:
        return {}
    numbers = sorted(numbers_in(text))
    return {"response_format": {"type": "json_schema", "json_schema": {
        "name": name, "schema": copied_schema(schema, words, numbers)}}}


def _property_names(schema) -> set[str]:
    """Every property name in `schema`, through objects and arrays."""
    if not isinstance(schema, dict):
        return set()
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    return set(props) | {n for v in props.values() for n in _property_names(v)} | _property_names(schema.get("items"))
