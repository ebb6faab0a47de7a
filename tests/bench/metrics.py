"""Metrics of the lift benchmark: one score in [0, 1] per (case, answer), and a per-task summary.

The three metrics of the task-file format (tests/bench/tasks.py), defined exactly:

- `json_fields`: the JSON object is the text from the first `{` to the last `}` of the answer
  (the same rule as trainer.rewards.json_extraction.extract_json_object, reimplemented here so measurement
  does not move when the trainer changes). No object, or not a JSON object: 0. Otherwise
  the share of gold fields the object gets right. Keys match case-insensitively. A value
  matches when, for a numeric gold, it reads as the same number (`45`, `"45.00"`, `"$45"`,
  `"12 kg"`: one leading currency sign and one trailing unit word of at most 8 letters are
  allowed, thousands commas too); for any other gold, when both are equal after casefolding,
  collapsing whitespace, trimming surrounding quotes and punctuation and dropping a leading
  "the", "a" or "an". Lists, objects, booleans and null never match.
- `exact`: both sides are casefolded and every character that is not a letter or digit
  becomes a space; the case scores 1 when the gold's words occur as a contiguous run of
  whole words within the first EXACT_WINDOW (20) words of the answer. The gold may list
  alternatives with `|` ("cow|cows"). So "The capital of France is Paris." matches "Paris",
  "Parisian" does not, and a long ramble gets no credit for a word it reaches late.
- `number`: the last number written with digits in the answer (`1,299.99`, `-3`, `8.`) equals
  the gold numerically. Number words ("eight") are not read.
- `tool_call`: the answer is the served message's tool calls as JSON (`[{"name", "arguments"}]`,
  arguments as the model wrote them; tests.bench.lift makes it); text that is not such a list
  is no call and scores 0. The first call counts: 0 for another function or arguments that are
  not a JSON object, else the share of gold arguments whose value matches (as in
  `json_fields`); an argument the function does not take costs as much as a wrong one.
  `exact_call` in a summary is the share of cases scoring 1.
"""
from __future__ import annotations

import json
import math
import re
from collections import defaultdict

EXACT_WINDOW = 20

# A number in free text: optional sign (not after a word char: "5-3" holds 5 and 3), digits with
# optional thousands commas, optional decimals. "8." at a sentence end reads as 8.
_NUMBER_IN_TEXT = re.compile(r"(?:(?<![\w.])-)?(?<![\d.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_NUMBER_VALUE = re.compile(r"[$€£]?\s*(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+)\s*(?:[^\W\d_]{1,8}\.?|%)?")
_FENCE = re.compile(r"```[ \t]*(?:json)?", re.IGNORECASE)
_EDGE_PUNCT = " \t\n\"'`.,;:!?()[]"
_ARTICLE = re.compile(r"^(?:the|a|an)\s+")


def parse_number(value) -> float | None:
    """A whole value read as a number ("45.00", "$1,299", "12 kg", 7), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    m = _NUMBER_VALUE.fullmatch(value.strip())
    return float(m.group(1).replace(",", "")) if m else None


def last_number(text: str) -> float | None:
    found = _NUMBER_IN_TEXT.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def _same_number(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def extract_json_object(text: str) -> tuple[dict | None, str]:
    """The object from the first '{' to the last '}', and the text around it (fences removed)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None, text
    try:
        obj = json.loads(text[start:end + 1])
    except ValueError:
        return None, text
    if not isinstance(obj, dict):
        return None, text
    return obj, _FENCE.sub("", text[:start] + text[end + 1:]).strip()


def _norm_value(s: str) -> str:
    s = " ".join(s.casefold().split()).strip(_EDGE_PUNCT)
    return _ARTICLE.sub("", s)


def value_matches(gold, got) -> bool:
    if got is None or isinstance(got, (bool, list, dict)):
        return False
    gold_num = parse_number(gold)
    if gold_num is not None:
        got_num = parse_number(got)
        return got_num is not None and _same_number(gold_num, got_num)
    return _norm_value(str(got)) == _norm_value(str(gold))


def score_json_fields(gold: dict, answer: str) -> float:
    obj, _ = extract_json_object(answer)
    if obj is None:
        return 0.0
    got: dict = {}
    for k, v in obj.items():
        got.setdefault(str(k).strip().casefold(), v)
    right = sum(value_matches(v, got.get(str(k).strip().casefold())) for k, v in gold.items())
    return right / len(gold)


def _words(s: str) -> list[str]:
    return re.sub(r"[\W_]+", " ", s.casefold()).split()


def score_exact(gold: str, answer: str) -> float:
    window = _words(answer)[:EXACT_WINDOW]
    for alt in gold.split("|"):
        want = _words(alt)
        if want and any(window[i:i + len(want)] == want for i in range(len(window) - len(want) + 1)):
            return 1.0
    return 0.0


def score_number(gold: str, answer: str) -> float:
    want, got = parse_number(gold), last_number(answer)
    return float(want is not None and got is not None and _same_number(want, got))


def score_tool_call(gold: dict, answer: str) -> float:
    try:
        calls = json.loads(answer)
    except ValueError:
        return 0.0
    if not isinstance(calls, list) or not calls or not isinstance(calls[0], dict):
        return 0.0
    call = calls[0]
    if call.get("name") != gold["name"]:
        return 0.0
    args = call.get("arguments")
    try:
        args = json.loads(args) if isinstance(args, str) else args
    except ValueError:
        return 0.0
    if not isinstance(args, dict):
        return 0.0
    want = gold["arguments"]
    right = sum(value_matches(v, args.get(k)) for k, v in want.items())
    extra = sum(k not in want for k in args)
    return max(0.0, right - extra) / len(want)


def score_case(case: dict, answer: str | None) -> float:
    """The case's metric on one answer, in [0, 1]; no answer (a failed request) scores 0."""
    if answer is None:
        return 0.0
    metric, gold = case["metric"], case["gold"]
    if metric == "json_fields":
        return score_json_fields(gold, answer)
    if metric == "exact":
        return score_exact(gold, answer)
    if metric == "number":
        return score_number(gold, answer)
    if metric == "tool_call":
        return score_tool_call(gold, answer)
    raise ValueError(f"unknown metric {metric!r}")


def summarize(cases: list[dict], answers: list[str | None], by=lambda case: case["task"]) -> dict[str, dict]:
    """Per group (the task tag unless `by` says otherwise): metric name(s), n, mean score, failed
    requests (answer None); for json_fields also valid_json (an object parsed), json_only
    (nothing but the object, a code fence allowed) and all_fields (share of cases with every
    field right); for tool_call exact_call (share of cases with the right call, whole)."""
    if len(cases) != len(answers):
        raise ValueError(f"{len(cases)} cases but {len(answers)} answers")
    groups: dict[str, list[tuple[dict, str | None]]] = defaultdict(list)
    for case, answer in zip(cases, answers):
        groups[str(by(case))].append((case, answer))
    out = {}
    for task, items in groups.items():
        scores = [score_case(c, a) for c, a in items]
        metrics = sorted({c["metric"] for c, _ in items})
        row = {"metric": "+".join(metrics), "n": len(items), "score": sum(scores) / len(scores),
               "failed": sum(a is None for _, a in items)}
        json_items = [(c, a) for c, a in items if c["metric"] == "json_fields"]
        if json_items:
            parsed = [extract_json_object(a) if a is not None else (None, "") for _, a in json_items]
            row["valid_json"] = sum(o is not None for o, _ in parsed) / len(json_items)
            row["json_only"] = sum(o is not None and not rest for o, rest in parsed) / len(json_items)
            row["all_fields"] = sum(score_case(c, a) == 1.0 for c, a in json_items) / len(json_items)
        tool_items = [(c, a) for c, a in items if c["metric"] == "tool_call"]
        if tool_items:
            row["exact_call"] = sum(score_case(c, a) == 1.0 for c, a in tool_items) / len(tool_items)
        out[task] = row
    return out


def overall(summary: dict[str, dict]) -> float:
    """Mean score over cases of a summary (tasks weighted by their n)."""
    n = sum(r["n"] for r in summary.values())
    return sum(r["score"] * r["n"] for r in summary.values()) / n if n else 0.0
