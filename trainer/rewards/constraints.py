"""Verifier for the format and length constraints a prompt states ("in at most 20 words",
"reply in JSON", "3 bullet points", "all lowercase", ...): an answer scores the share of
them it meets.
"""
from __future__ import annotations

import json
import re
from typing import Callable

from trainer.prompts import Candidate, Prompt, request_text

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
    constraints = detect_constraints(request_text(prompt))
    if not constraints:
        return [None] * len(candidates)
    return [sum(check(c.text) for _, check in constraints) / len(constraints) for c in candidates]
