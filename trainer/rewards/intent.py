"""Which JSON keys a request wants, in whatever words it asks: the shared input of the
extraction verifier, the structured scaffold and the exemplar grouping.

In order, the first that answers:
1. the request's own contract: response_format json_schema properties, or the parameters
   of the one function tool_choice forces (trainer/prompts.Prompt.contract);
2. a JSON schema written in the text ({"type": "object", "properties": {...}});
3. a skeleton object in the text ({"name": "...", "city": ""}) or a bare-key one ({name, city});
4. keys listed in words, when the text asks for JSON: "extract the fields a, b and c from",
   "return a JSON object with the keys a, b, c", "JSON containing a and b", "put the a, b
   and c of this note into JSON", "keys: a, b", a bulleted list under "fields:".
None when the request asks for no JSON object with known keys. Hand-written (regular
expressions and json.loads): no library parses requests phrased by people; the tests hold
more than 30 wordings that appear nowhere else.
"""
from __future__ import annotations

import json
import re

from trainer.prompts import Prompt, offered_functions

MAX_KEYS = 40

# A key as people write one: a word or up to four, or a snake/camel/kebab identifier.
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(?: [A-Za-z0-9_\-]+){0,3}")
_QUOTED = re.compile(r"[`'\"“‘]([^`'\"”’\n]{1,60})[`'\"”’]")
# Words that end a list of keys ("... a, b and c from the text", "... of this note").
_STOP = r"(?=\s+(?:from|of|for|in|into|as|about|that|which|based|using|out of|found|given|mentioned|described|" \
        r"to|on|below|above|here)\b|\s*[.:;\n)(]|\s*$)"
_LIST = r"((?:[`'\"“‘]?[A-Za-z_][\w \-]{0,40}?[`'\"”’]?\s*(?:,|;|/|\band\b|\bor\b|&)\s*)*" \
        r"[`'\"“‘]?[A-Za-z_][\w \-]{0,40}?[`'\"”’]?)"
_KEYWORD = r"(?:fields?|keys?|properties|attributes|entries|columns|slots)"

_PATTERNS = [
    # "extract the fields customer, item and total from ..." (the benchmark's wording, first)
    re.compile(r"extract\s+(?:the\s+)?" + _KEYWORD + r"\s*:?\s*" + _LIST + _STOP, re.IGNORECASE),
    # "... with the keys a, b, c", "keys: a, b", "fields named a and b", "properties `a`, `b`"
    re.compile(_KEYWORD + r"\s+(?:(?:are|is)\s+)?(?:named|called|labell?ed)?\s*:?\s*" + _LIST + _STOP, re.IGNORECASE),
    re.compile(_KEYWORD + r"\s*:\s*" + _LIST + _STOP, re.IGNORECASE),
    # "JSON with a, b and c", "a JSON object containing a and b", "JSON that has a, b"
    re.compile(r"json(?:\s+(?:object|dict(?:ionary)?|record|map|document))?\s+(?:with|containing|holding|"
               r"that\s+(?:has|holds|contains|includes)|having|including|made of|of)\s+(?:the\s+|an?\s+|only\s+)?"
               + _LIST + _STOP, re.IGNORECASE),
    # "put / give me / pull out / return the a, b and c of this note (in|into|as) JSON"
    re.compile(r"(?:put|give(?:\s+me)?|pull(?:\s+out)?|return|output|provide|list|capture|record|turn|convert|"
               r"get|grab|fetch|report|send(?:\s+back)?|extract|identify|find)\s+(?:me\s+)?(?:the\s+|its\s+|their\s+)?"
               + _LIST + r"\s+(?:of|from|in)\s+(?:this|the|that|these|those|each|my|our|your|every)\b",
               re.IGNORECASE),
]
_BULLETS = re.compile(_KEYWORD + r"[^\n]*:\s*\n((?:[ \t]*(?:[-*•]|\d+[.)])[ \t]+[^\n]+\n?){1,40})", re.IGNORECASE)
_BULLET_ITEM = re.compile(r"^[ \t]*(?:[-*•]|\d+[.)])[ \t]+[`'\"“‘]?([A-Za-z_][\w \-]{0,40}?)[`'\"”’]?"
                          r"(?:[ \t]*(?:[:(—–]|[ \t]-[ \t]).*)?[ \t]*$", re.MULTILINE)
_ASKS_JSON = re.compile(r"\bjson\b", re.IGNORECASE)
_NOT_KEYS = {"the", "a", "an", "it", "this", "that", "them", "these", "text", "message", "note", "json", "object",
             "following", "details", "information", "info", "data", "values", "fields", "keys", "only", "each",
             "one", "all", "every", "below", "above", "email", "reply", "answer", "output", "result", "results"}


def _snake(key: str) -> str:
    return re.sub(r"[\s\-]+", "_", key.strip()).lower() if " " in key.strip() else key.strip()


# A list ends at the first word that starts saying where the keys come from.
_LIST_END = re.compile(r"\s*\b(?:based|from|of|for|in|into|as|about|that|which|using|out|found|given|mentioned|"
                       r"described|on|below|above|here|please)\b.*$", re.IGNORECASE | re.DOTALL)


def _split_list(raw: str) -> list[str] | None:
    raw = _LIST_END.sub("", raw)
    quoted = _QUOTED.findall(raw)
    if len(quoted) >= 2:  # "`a`, `b` and `c`": the quotes say exactly where each key is
        items = quoted
    else:
        items = [i.strip(" `'\"“”‘’") for i in re.split(r",|;|/|&|\band\b|\bor\b", raw)]
    keys = []
    for item in items:
        item = re.sub(r"^(?:the|its|their|an?|and|or)\s+", "", item.strip(), flags=re.IGNORECASE)
        if not item or not _KEY.fullmatch(item) or item.lower() in _NOT_KEYS:
            continue
        key = _snake(item) if item not in quoted else item
        if key not in keys:
            keys.append(key)
    return keys if len(keys) >= 1 else None


def _objects_in(text: str):
    """Every top-level {...} span of the text that parses as a JSON object."""
    depth, start = 0, None
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0 and start is not None:
                span = text[start:i + 1]
                try:
                    obj = json.loads(span)
                except ValueError:
                    obj = _bare_keys(span)
                if isinstance(obj, dict):
                    yield obj


def _bare_keys(span: str) -> dict | None:
    """{name, city, date} (keys without values) as {key: None}, or None."""
    inner = span[1:-1].strip()
    if not inner or any(c in inner for c in '{}[]"'):
        return None
    parts = [p.strip() for p in inner.split(",")]
    if all(re.fullmatch(r"[A-Za-z_][\w]*(?:\s*:\s*\.{3}|\s*:\s*\?)?", p) for p in parts):
        return {re.split(r"\s*:", p)[0]: None for p in parts}
    return None


def _schema_keys(schema: object) -> list[str] | None:
    if isinstance(schema, dict) and isinstance(schema.get("properties"), dict) and schema["properties"]:
        return list(schema["properties"])[:MAX_KEYS]
    return None


def json_keys_in_text(text: str) -> list[str] | None:
    """The JSON keys a request's text asks for, or None (see the module docstring, 2-4)."""
    for obj in _objects_in(text):
        if keys := _schema_keys(obj) if ("properties" in obj and ("type" in obj or "$schema" in obj)) else None:
            return keys
        if obj and all(isinstance(k, str) and _KEY.fullmatch(k) for k in obj) and \
                all(v in (None, "", "...", "…", "?", 0, []) or isinstance(v, str) and len(v) <= 40 for v in obj.values()):
            return list(obj)[:MAX_KEYS]
    m = _PATTERNS[0].search(text)
    if m and (keys := _split_list(m.group(1))):
        return keys[:MAX_KEYS]
    if not _ASKS_JSON.search(text):
        return None
    if (b := _BULLETS.search(text)) and (keys := [_snake(k) for k in _BULLET_ITEM.findall(b.group(1))
                                                  if k.lower() not in _NOT_KEYS]):
        return list(dict.fromkeys(keys))[:MAX_KEYS]
    for pattern in _PATTERNS[1:]:
        m = pattern.search(text)
        if m and (keys := _split_list(m.group(1))):
            return keys[:MAX_KEYS]
    return None


def requested_keys(prompt: Prompt) -> list[str] | None:
    """The keys the request wants, from its contract first, then from its text."""
    rf = prompt.contract.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        if keys := _schema_keys((rf.get("json_schema") or {}).get("schema")):
            return keys
    choice = prompt.contract.get("tool_choice")
    forced = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    for fn in offered_functions(prompt):
        if forced and fn["name"] == forced:
            if keys := _schema_keys(fn.get("parameters")):
                return keys
    return json_keys_in_text(prompt.text)
