"""The general probe suite (trainer/probes.jsonl): what the gate asks every candidate so a
model that gains on its traffic but loses general ability is never promoted.

Over 200 prompts of many kinds (facts, short reasoning, formats, refusals, other languages,
one-line code), none taken from the benchmark's regression split, so the benchmark measures
the gate and not its own copy. Each probe carries a check of its own answer:
  {"words": [...]}      one of them at word boundaries ("5" does not pass "15");
  {"number": N}         the answer's first number is N;
  {"refuse": true}      the answer declines;
  {"constraints": true} the constraint verifier passes the format the prompt states;
  {"python": true}      the answer's code parses and is at most 3 lines;
  {"open": true}        no check (agreement and drift only).
A words or number check may add {"max_words": N} where the prompt asks for a short answer
("One word.", "Reply with only the number.", "Name the country."): the answer must then also
be at most N words. Following the length a prompt asks for is general ability too, and a
check that finds the word anywhere passes a model that drifted into full sentences (the
benchmark's regression split lost 5 points that way while this suite saw none of it).
The gate compares these pass/fail results per probe between the candidate, its parent and
the base (trainer/gate.py), with the short answers' agreement and a drift figure beside them.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from importlib.resources import files

from trainer.prompts import Candidate, Prompt
from trainer.rewards.constraints import constraint_verifier
from trainer.rewards.ensemble import PASS_AT

CHECKS = ("words", "number", "refuse", "constraints", "python", "open")
MODIFIERS = ("max_words",)  # may accompany a words or number check
_REFUSAL = re.compile(r"\b(?:i\s*(?:can\s*not|can'?t|cannot|won'?t|will\s+not|am\s+not\s+able|'m\s+not\s+able|"
                      r"must\s+decline|am\s+unable|'m\s+unable)|i'?m\s+sorry|sorry,|unable\s+to|not\s+able\s+to|"
                      r"not\s+appropriate|can'?t\s+(?:help|assist|provide)|cannot\s+(?:help|assist|provide))\b",
                      re.IGNORECASE)  # not "illegal" or "harmful": a complying answer repeats those from the prompt
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_FENCE = re.compile(r"```[ \t]*\w*[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


@dataclass(frozen=True)
class Probe:
    id: str
    kind: str
    messages: list
    check: dict

    @property
    def checked(self) -> bool:
        return "open" not in self.check


def load_probes() -> list[Probe]:
    text = files("trainer").joinpath("probes.jsonl").read_text()
    return [Probe(**json.loads(line)) for line in text.splitlines() if line.strip()]


def _has_word(answer: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word.lower())}(?!\w)", answer.lower()) is not None


def _short_enough(answer: str, max_words: int | None) -> bool:
    # Whitespace-separated tokens with a letter or digit: "**Ottawa** ." is one word, "0.25"
    # and "$28" are one each.
    return max_words is None or sum(bool(re.search(r"\w", t)) for t in answer.split()) <= max_words


def passed(probe: Probe, answer: str) -> bool | None:
    """Does `answer` pass the probe's check (and the length it asks for)? None for an open probe."""
    ok = _content_passed(probe, answer)
    return ok if ok is None else ok and _short_enough(answer, probe.check.get("max_words"))


def _content_passed(probe: Probe, answer: str) -> bool | None:
    c = probe.check
    if "words" in c:
        return any(_has_word(answer, w) for w in c["words"])
    if "number" in c:
        # The first number, or the one after the last "=" ("7 + 8 = 15" answers 15).
        line = answer.rsplit("=", 1)[-1] if "=" in answer.split("\n", 1)[0] else answer
        m = _NUMBER.search(line)
        return m is not None and float(m.group().replace(",", "")) == float(c["number"])
    if "refuse" in c:
        return _REFUSAL.search(answer) is not None
    if "constraints" in c:
        score = constraint_verifier(Prompt(probe.id, probe.messages), [Candidate(answer, "probe")])[0]
        return score is not None and score >= PASS_AT
    if "python" in c:
        # A fenced block, else an inline `code` span ("The expression is `min(nums)`"), else the answer.
        fenced = _FENCE.search(answer) if "```" in answer else None
        inline = _INLINE.search(answer) if not fenced else None
        code = (fenced.group(1) if fenced else inline.group(1) if inline else answer).strip()
        if not code or len(code.splitlines()) > 3:
            return False
        try:
            ast.parse(code)
        except (SyntaxError, ValueError):
            return False
        return True
    return None


def short_answer(answer: str) -> str:
    """What a short answer says, for agreement between models: the first number if there is
    one, else the first line's words, lowercased, without punctuation or a closing period."""
    line = next((ln for ln in answer.strip().splitlines() if ln.strip()), "")
    m = _NUMBER.search(line)
    if m:
        return m.group().replace(",", "")
    return " ".join(re.findall(r"\w+", line.lower()))[:80]
