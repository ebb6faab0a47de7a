"""Explore: spend test-time compute to find better answers than the bare model gives.

Each strategy turns a logged prompt into (messages, sampling params) for vLLM's OpenAI
API; `n` samples are drawn per strategy. Candidates are always trained against the BARE
prompt later, so the tuned model gives the scaffold's quality without the scaffold.
"""
from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import httpx

from trainer.rewards import Candidate, Prompt, asked_keys

log = logging.getLogger(__name__)

Strategy = Callable[[Prompt], tuple[list[dict], dict]]


def plain(prompt: Prompt) -> tuple[list[dict], dict]:
    """The bare prompt, sampled: the model's own spread of answers."""
    return prompt.messages, {"temperature": 0.8}


def scaffold(prompt: Prompt) -> tuple[list[dict], dict]:
    """A structured-output scaffold derived from what the prompt asks for."""
    keys = asked_keys(prompt.text)
    if keys:
        skeleton = json.dumps({k: "..." for k in keys})
        system = ("You extract data from text. Reply with only one JSON object with exactly the keys "
                  f"{', '.join(keys)}, each value copied from the text. No other words.")
        msgs = [{"role": "system", "content": system}] + _append_to_last_user(
            prompt.messages, f"\n\nReply with only this JSON object filled in: {skeleton}")
    else:
        system = "Answer correctly and concisely. Think it through briefly, then state the final answer clearly."
        msgs = [{"role": "system", "content": system}] + [m for m in prompt.messages if m.get("role") != "system"]
    return msgs, {"temperature": 0.7}


STRATEGIES: dict[str, Strategy] = {"plain": plain, "scaffold": scaffold}


def _append_to_last_user(messages: list[dict], suffix: str) -> list[dict]:
    out = [dict(m) for m in messages if m.get("role") != "system"]
    for m in reversed(out):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            m["content"] = m["content"] + suffix
            break
    return out


def explore(prompts: list[Prompt], vllm_url: str, model: str, n: int, max_tokens: int, concurrency: int,
            progress: Callable[[int, int], None] | None = None) -> dict[str, list[Candidate]]:
    """Candidates per prompt_id from every strategy (failed requests are logged and skipped)."""
    jobs = [(p, name) for p in prompts for name in STRATEGIES]
    out: dict[str, list[Candidate]] = {p.prompt_id: [] for p in prompts}
    done = 0
    with httpx.Client(base_url=vllm_url, timeout=300) as client:

        def run(job):
            p, name = job
            messages, params = STRATEGIES[name](p)
            body = {"model": model, "messages": messages, "n": n, "max_tokens": max_tokens, **params}
            r = client.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            return p.prompt_id, [Candidate(c["message"]["content"] or "", name) for c in r.json()["choices"]]

        with ThreadPoolExecutor(concurrency) as pool:
            for job, fut in [(j, pool.submit(run, j)) for j in jobs]:
                try:
                    pid, cands = fut.result()
                    out[pid].extend(cands)
                except Exception as e:
                    log.warning("explore %s/%s failed: %s", job[0].prompt_id, job[1], e)
                done += 1
                if progress:
                    progress(done, len(jobs))
    return out


def served_model_name(vllm_url: str) -> str:
    """vLLM serves one model; ask it for the name rather than configuring it twice."""
    r = httpx.get(vllm_url + "/v1/models", timeout=10)
    r.raise_for_status()
    return r.json()["data"][0]["id"]
