"""Seeded exploration against the shared stack's real vLLM: the same seed explores the same
candidates (so a cycle, and a benchmark's ablation, can be re-run), another seed others."""
from __future__ import annotations

import pytest

from tests.e2e.traffic import extraction_prompts
from trainer.explore import round_one_jobs, run_jobs, served_model_name
from trainer.prompts import Prompt

pytestmark = [pytest.mark.e2e]


def test_the_same_seed_explores_the_same_candidates(stack):
    vllm = stack.info["vllm"]
    prompts = [Prompt(f"p{i}", [{"role": "user", "content": t}]) for i, t in enumerate(extraction_prompts(2, seed=5))]
    jobs = round_one_jobs(prompts, ["plain", "plain_hot"])
    model = served_model_name(vllm)

    def texts(seed):
        # One request at a time: the n samples of a request are batched the same way each run.
        got = run_jobs(jobs, vllm, model, n=3, max_tokens=24, concurrency=1, seed=seed)
        return {pid: [c.text for c in cands] for pid, cands in got.items()}

    first = texts(0)
    assert sum(map(len, first.values())) == 12
    assert texts(0) == first
    other = texts(1)
    assert other != first
    # Within a request the n samples get seeds seed, seed+1, ...: not n copies of one answer.
    assert any(len(set(t)) > 1 for t in first.values())
