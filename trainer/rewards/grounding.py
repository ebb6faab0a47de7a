"""Whether a value was copied from the conversation: one rule for every reader (the
extraction verifier, trainer/rewards/json_extraction.py; the tool-call verifier,
trainer/rewards/contract.py; the pairs' choosable check, trainer/pairs.py).

- Numbers by value, whatever their formatting: 45 is in "$45.00", "10" is not in "100".
- Text as whole words, case and spacing ignored: "Bo" is in "bo smith", not in "bought";
  "new  york" is in "New York". A substring test let a two-letter fragment of any word in
  the prompt pass as a grounded field value.
- A value that only repeats a field's name is found in a request that names its fields in
  words, yet it is the question echoed, not a value (`echoes_a_name`).
- Two fields holding the same text, or one's text inside another's ("Austin for 3 people"
  as pickup and destination; "Melbourne" beside "Central Station to Melbourne"), each found
  in the request, yet one of them is wrong (`overlaps`).
"""
from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*")
_ARTICLE = re.compile(r"^(?:the|a|an)\s+")
_NUMERIC = re.compile(r"[$€£]?\s*-?[\d.,]+\s*%?")  # a value that is a number, perhaps with a currency or a %


def numbers_in(text: str) -> set[float]:
    out = set()
    for n in _NUMBER.findall(text):
        try:
            out.add(float(n.replace(",", "")))
        except ValueError:  # "1.2.3": a version or a date, not one number
            continue
    return out


def normalize(text: str) -> str:
    """Casefolded, runs of whitespace as one space: how `copied` reads both sides."""
    return " ".join(text.casefold().split())


def numeric_text(text: str) -> bool:
    """Is `text` a number written out ("45", "$1,299.99", "12 %")?"""
    s = normalize(text)
    return bool(_NUMERIC.fullmatch(s)) and any(ch.isdigit() for ch in s)


def copied(value, conversation: str) -> bool:
    """Is `value` (a string or a number) found in `conversation`? Numbers by value, text as
    whole words; an empty value or a boolean is never found (a boolean has nothing to copy:
    callers that accept one say so)."""
    if value is None or isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return float(value) in numbers_in(conversation)
    s = normalize(str(value))
    if not s:
        return False
    if numeric_text(s):
        nums = numbers_in(s)
        return bool(nums) and nums <= numbers_in(conversation)
    # Word boundaries only where the value itself starts or ends with a word character:
    # "$45 off" or "(555) 010" must still be found inside longer text.
    left = r"(?<!\w)" if s[0].isalnum() or s[0] == "_" else ""
    right = r"(?!\w)" if s[-1].isalnum() or s[-1] == "_" else ""
    return re.search(left + re.escape(s) + right, normalize(conversation)) is not None


def _name_form(text: str) -> str:
    return _ARTICLE.sub("", normalize(re.sub(r"[_\-]+", " ", text)).strip(" .:,;\"'"))


def echoes_a_name(value, names) -> bool:
    """Does `value` only repeat one of the field `names` ("event" or "The venue" for keys event
    and venue, "first name" for first_name)? A request that asks for its fields in words
    contains their names, so such a value is found in it, but it is the question echoed, not a
    value from the text: in a bench-lift cycle (2026-12-07) {"event": "event", "venue":
    "venue", "attendees": "attendees"} was chosen over real answers three times."""
    if not isinstance(value, str):
        return False
    v = _name_form(value)
    return bool(v) and any(v == _name_form(n) for n in names)


def _tokens(text: str) -> list[str]:
    # Whitespace-separated, edge punctuation stripped: "bob@acme.com" is one token, so "acme"
    # is not inside it; "Melbourne." ends "Central Station to Melbourne.".
    return [t for t in (w.strip("\"'()[]{}<>.,;:!?") for w in normalize(text).split()) if t]


def _inside(a: list[str], b: list[str]) -> bool:
    return len(a) < len(b) and any(b[i:i + len(a)] == a for i in range(len(b) - len(a) + 1))


def overlaps(values) -> set[int]:
    """The positions of `values` (an answer's field values) whose text repeats another's or
    runs inside it as whole tokens: of each such two, at least one field took a value that
    is not its own, and which one is not known. Numbers never count, neither equal to one
    another (2 guests, 2 nights; 45 and "$45") nor inside a text ("June 2" beside 2 nights,
    "Terminal 2"). Seen in a bench-lift cycle (2026-12-07): "June 25" as nights and date,
    pickup "Central Station to Melbourne" with destination "Melbourne", topic "Alvarez" with
    person "Diego Alvarez". Strict on purpose: a real address holding its city counts too."""
    texts = {i: _tokens(v) for i, v in enumerate(values)
             if isinstance(v, str) and v.strip() and not numeric_text(v)}
    out: set[int] = set()
    for i, a in texts.items():
        for j, b in texts.items():
            if i < j and a and b and (a == b or _inside(a, b) or _inside(b, a)):
                out |= {i, j}
    return out


def overlapping(values) -> bool:
    """Does any of `values` overlap another (`overlaps`)?"""
    return bool(overlaps(values))
