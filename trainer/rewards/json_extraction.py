"""Verifier for extraction-style prompts (a JSON object with known keys asked for, in any
wording or by the request's schema: trainer/rewards/intent.py): an answer scores for one
JSON object with the asked keys, values copied from the prompt rather than invented, and
nothing written around it.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence

from trainer.prompts import Candidate, Prompt
from trainer.rewards.grounding import copied, echoes_a_name, normalize, overlaps
from trainer.rewards.intent import json_keys_in_text, requested_keys


def asked_keys(text: str) -> list[str] | None:
    """The JSON keys a request's text asks for, in any wording, or None if it asks for none
    ("Extract the fields customer, item, quantity and total from ..." -> [customer, ...])."""
    return json_keys_in_text(text)


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
# pair, and the tuned model kept writing chatter after the JSON (docs/measurements.md). A lone ```json
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
    grounded = _grounded(obj, present, src, names=keys)
    score = 0.2 + 0.3 * len(present) / len(wanted) + 0.5 * len(grounded) / len(wanted)
    score -= 0.05 * (len(obj) - len(present))
    if rest:
        score -= CHATTER_PENALTY
    elif answer.strip()[:1] != "{":  # nothing but a fence around the object
        score -= FENCE_PENALTY
    return max(0.0, min(1.0, score))


def _grounded(obj: dict, keys: list[str], src: str, names: Sequence[str] = ()) -> list[str]:
    """Keys whose value is copied from the text, as a field value and not the text itself: a
    value longer than a quarter of the prompt is a copied sentence, not a field; a value that
    only repeats one of the asked keys' `names` is the question echoed; and values that
    repeat or hold one another ("March 1" as hotel and nights, "1" as date) count for none of
    their keys, since which of them is right is not known (all seen from a 135M model
    exploring)."""
    clash = {keys[i] for i in overlaps([obj[k] for k in keys])}
    out = []
    for k in keys:
        v = obj[k]
        s = normalize(str(v)) if v is not None else ""
        if s and copied(v if isinstance(v, (int, float)) else s, src) and len(s) <= max(24, len(src) // 4) \
                and not echoes_a_name(s, names) and k not in clash:
            out.append(k)
    return out


def json_verifier(prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
    """Verifier for extraction-style prompts; no opinion on other prompts."""
    keys = requested_keys(prompt)
    if keys is None:
        return [None] * len(candidates)
    # A tool call answers in its arguments, not its text: the tool-call verifier judges it.
    return [None if c.tool_calls or "<tool_call>" in c.text else score_extraction(c.text, keys, prompt.text)
            for c in candidates]
