"""Relative LLM judge: one call to an OpenAI-compatible chat endpoint scores a whole group.

Judging the candidates of a prompt side by side (not one at a time) is what TAO does: a
judge compares better than it grades, and a group costs one request. Any server that speaks
/v1/chat/completions works (vLLM, a hosted API).

    judge = make_relative_judge("http://127.0.0.1:8100", "Qwen2.5-7B-Instruct", DEFAULT_RUBRIC)
    scores = judge(prompt, candidates)   # [0.8, 0.1, None, ...]

The judge is a reward source like any other: it never raises. A failed call (HTTP error,
timeout, a reply that is not {"scores": [n numbers]}) gives None for every candidate, and
says why in a warning; one unusable score gives None for that candidate only.

By default the request carries a JSON schema (`response_format` json_schema: exactly n scores
from 0 to 10), so an endpoint with structured output (vLLM, OpenAI) can only reply in shape:
without it SmolLM2-135M as its own judge gave 0 usable replies in 59 groups (lift benchmark).
An endpoint that refuses response_format with a 400 is asked again without it, once, and
from then on never with it.

The candidates are shown to the judge in a shuffled order (a permutation seeded by the
group's own text, so the same group is always shown the same way) and the scores are mapped
back. Explore lists a group's candidates by strategy, always in the same order, and a weak
judge scores by position: SmolLM2-135M judging its own candidates replied "1, 2, 3, ..., 10,
10, ..." and so rewarded whichever strategy came later in the list. Shuffled, position bias
becomes noise spread over every strategy instead of a preference for one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random

import httpx

from trainer.prompts import Candidate, Prompt, RewardSource, content_text

log = logging.getLogger(__name__)

DEFAULT_RUBRIC = (
    "Score how well each answer serves the user's request. 10: correct, complete, follows every "
    "instruction on content and format (including 'only JSON', length limits, language), nothing "
    "invented. 5: partly correct or follows the format only partly. 0: wrong, off-topic, empty, or "
    "ignores the requested format. Judge correctness before style; a longer answer is not a better one."
)

# Candidates are cut to fit the judge's context: a group shares this many characters, and no
# candidate gets more than MAX_CANDIDATE_CHARS (an answer's quality shows in its first screens).
GROUP_BUDGET_CHARS = 24_000
MAX_CANDIDATE_CHARS = 4_000
MIN_CANDIDATE_CHARS = 300
MAX_REQUEST_CHARS = 6_000

_SYSTEM = "You are a strict, impartial judge of answers written by AI assistants. You reply with JSON only."


def make_relative_judge(base_url: str, model: str, rubric: str, *, api_key: str | None = None,
                        timeout_s: float = 60, max_tokens: int = 256, structured: bool = True,
                        group_chars: int = GROUP_BUDGET_CHARS, shuffle: bool = True) -> RewardSource:
    """A reward source that asks `model` at `base_url` (with or without a trailing /v1) to score
    all candidates of a prompt in one request, 0-10 each per `rubric`, mapped to [0, 1].
    `structured`: send the reply's JSON schema; `group_chars`: characters all candidates of a
    group share in the request (fit it to the judge's context); `shuffle`: show the candidates
    in an order of their own (see the module docstring), scores still come back in input order."""
    url = base_url.rstrip("/").removesuffix("/v1") + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    use_schema = structured

    def judge(prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
        nonlocal use_schema
        n = len(candidates)
        if n == 0:
            return []
        order = presentation_order(prompt, candidates) if shuffle else list(range(n))
        shown = [candidates[i] for i in order]
        body = {"model": model, "messages": judge_messages(prompt, shown, rubric, group_chars),
                "temperature": 0, "max_tokens": max_tokens}
        try:
            resp = httpx.post(url, json=body | ({"response_format": scores_format(n)} if use_schema else {}),
                              headers=headers, timeout=timeout_s)
            if use_schema and resp.status_code == 400 and "response_format" in resp.text:
                log.warning("judge %s refuses response_format (%s); asking without a schema from now on",
                            url, resp.text[:200])
                use_schema = False
                resp = httpx.post(url, json=body, headers=headers, timeout=timeout_s)
            resp.raise_for_status()
            content = resp.json()["choices"][0]["message"]["content"]
        except httpx.TimeoutException:
            log.warning("judge %s: no reply within %.1f s; no opinion on %d candidates", url, timeout_s, n)
            return [None] * n
        except httpx.HTTPStatusError as e:
            log.warning("judge %s: HTTP %d (%s); no opinion on %d candidates",
                        url, e.response.status_code, e.response.text[:200], n)
            return [None] * n
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
            log.warning("judge %s: request failed (%s: %s); no opinion on %d candidates", url, type(e).__name__, e, n)
            return [None] * n
        shown_scores, reason = parse_scores(content if isinstance(content, str) else "", n)
        if reason:
            log.warning("judge %s: %s; reply was %r", url, reason, (content or "")[:300])
        scores: list[float | None] = [None] * n
        for label, i in enumerate(order):
            scores[i] = shown_scores[label]
        return scores

    return judge


def presentation_order(prompt: Prompt, candidates: list[Candidate]) -> list[int]:
    """The order in which the judge sees the candidates: order[k] is the index of the candidate
    labelled [k+1]. Seeded by the group's text (not Python's salted hash()), so a group is
    shown the same way in every process and a re-run judges the same request."""
    digest = hashlib.sha256(json.dumps([prompt.messages, [c.text for c in candidates]],
                                       sort_keys=True, default=str).encode()).digest()
    order = list(range(len(candidates)))
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return order


def scores_format(n: int) -> dict:
    """OpenAI `response_format` for {"scores": [n numbers from 0 to 10]}."""
    scores = {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 10}, "minItems": n, "maxItems": n}
    return {"type": "json_schema", "json_schema": {"name": "scores", "strict": True, "schema": {
        "type": "object", "properties": {"scores": scores}, "required": ["scores"], "additionalProperties": False}}}


def judge_messages(prompt: Prompt, candidates: list[Candidate], rubric: str,
                   group_chars: int = GROUP_BUDGET_CHARS) -> list[dict]:
    """The chat messages asking for {"scores": [...]} over candidates labelled [1]..[n]."""
    n = len(candidates)
    per = max(MIN_CANDIDATE_CHARS, min(MAX_CANDIDATE_CHARS, group_chars // n))
    answers = "\n\n".join(f"[{i}]\n{_truncate(c.text, per)}" for i, c in enumerate(candidates, 1))
    user = (
        f"Rubric:\n{rubric}\n\n"
        f"The user's request:\n<<<\n{_truncate(_conversation(prompt), MAX_REQUEST_CHARS)}\n>>>\n\n"
        f"{n} candidate answers, labelled [1] to [{n}]:\n\n{answers}\n\n"
        f"Score every answer from 0 to 10 according to the rubric, comparing them with each other. "
        f'Reply with only a JSON object of the form {{"scores": [s1, ..., s{n}]}}: exactly {n} numbers, '
        f"in the order of the labels."
    )
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


def parse_scores(content: str, n: int) -> tuple[list[float | None], str | None]:
    """Scores in [0, 1] from a judge reply, and the reason when something was unusable.

    The object is taken from the first '{' to the last '}'. Anything but exactly n scores
    gives None for all: with one missing we cannot tell which label it belonged to. A score
    out of 0-10 is clamped; a non-number, NaN or infinity is None for that candidate."""
    start, end = content.find("{"), content.rfind("}")
    if start < 0 or end <= start:
        return [None] * n, "no JSON object in the reply"
    try:
        obj = json.loads(content[start : end + 1])
    except ValueError as e:
        return [None] * n, f"malformed JSON ({e})"
    scores = obj.get("scores") if isinstance(obj, dict) else None
    if not isinstance(scores, list):
        return [None] * n, 'no "scores" list in the reply'
    if len(scores) != n:
        return [None] * n, f"{len(scores)} scores for {n} candidates"
    out: list[float | None] = []
    bad = []
    for i, s in enumerate(scores, 1):
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            out.append(None)
            bad.append(i)
        else:
            out.append(min(10.0, max(0.0, float(s))) / 10)
    return out, (f"unusable score for candidates {bad}" if bad else None)


def _conversation(prompt: Prompt) -> str:
    # The judge needs the whole request (system instructions state formats too), not just the last turn.
    return "\n".join(f"{m.get('role', 'user')}: {content_text(m.get('content'))}" for m in prompt.messages)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n[... {len(text) - limit} more characters cut]"
