"""Whether a value was copied from the conversation: one rule for every reader (the
extraction verifier, trainer/rewards/json_extraction.py; the tool-call verifier,
trainer/rewards/contract.py; the pairs' choosable check, trainer/pairs.py).

- Numbers by value, whatever their formatting: 45 is in "$45.00", "10" is not in "100".
- Text as whole words, case and spacing ignored: "Bo" is in "bo smith", not in "bought";
  "new  york" is in "New York". A substring test let a two-letter fragment of any word in
  the prompt pass as a grounded field value.
- A value that only repeats a field's name is found in a request that names its fields in
  words, yet it is the question echoed, not a value (`echoes_a_name`).
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
