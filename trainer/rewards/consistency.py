"""Self-consistency across samples: an answer that the other candidates of its prompt also
give is more likely right. `final_answer_key` says when two answers are the same answer.
"""
from __future__ import annotations

import json
import re

from trainer.prompts import Candidate, Prompt
from trainer.rewards.json_extraction import extract_json_object

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
