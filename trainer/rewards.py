"""Label-free reward sources and their ensemble.

A reward source is a plain callable `(prompt, candidates) -> list[float | None]`: one score
in [0, 1] per candidate, or None where the source has no opinion. `ensemble` combines them
as a weighted mean of the opinions given.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable, Protocol


@dataclass
class Prompt:
    prompt_id: str                   # completion_id of the logged request
    messages: list[dict]             # the bare request, as sent by the client
    task: str | None = None
    feedback: list[dict] = field(default_factory=list)  # [{"kind", "value", "choice_index"}]

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
    """The JSON object between the first '{' and the last '}', and the text left around it."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None, text
    try:
        obj = json.loads(text[start : end + 1])
    except ValueError:
        return None, text
    if not isinstance(obj, dict):
        return None, text
    rest = (text[:start] + text[end + 1 :]).replace("```json", "").replace("```", "")
    return obj, rest.strip()


def score_extraction(answer: str, keys: list[str], source_text: str) -> float:
    """0.2 for one parseable object, +0.3 x share of asked keys present, +0.5 x share of those
    values found in the prompt (grounded, not invented), -0.05 per extra key, -0.1 for chatter
    around the object (the client asked for the object only)."""
    obj, rest = extract_json_object(answer)
    if obj is None:
        return 0.0
    wanted = {k.lower() for k in keys}
    present = [k for k in obj if k.lower() in wanted]
    src = source_text.lower()
    grounded = [k for k in present if obj[k] is not None and str(obj[k]).strip() and str(obj[k]).lower() in src]
    score = 0.2 + 0.3 * len(present) / len(wanted) + 0.5 * len(grounded) / len(wanted)
    score -= 0.05 * (len(obj) - len(present))
    score -= 0.1 if rest else 0.0
    return max(0.0, min(1.0, score))


def json_verifier(prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
    """Verifier for extraction-style prompts; no opinion on other prompts."""
    keys = asked_keys(prompt.text)
    if keys is None:
        return [None] * len(candidates)
    return [score_extraction(c.text, keys, prompt.text) for c in candidates]


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
    scores: list[float | None] = []
    detail: list[dict] = []
    for i in range(len(candidates)):
        opinions = {name: s[i] for name, s in per_source.items() if s[i] is not None}
        detail.append(opinions)
        total_w = sum(sources[n][0] for n in opinions)
        scores.append(sum(sources[n][0] * v for n, v in opinions.items()) / total_w if total_w else None)
    return scores, detail
