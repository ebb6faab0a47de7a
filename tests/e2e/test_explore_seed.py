"""Seeded exploration against the shared stack's real vLLM: the same seed explores the same
candidates (so a cycle, and a benchmark's ablation, can be re-run), another seed others.
vLLM reproduces a seeded sample as far as its numerics repeat: nearly always, not always."""
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

    def identical(a, b):
        return sum(x == y for pid in a for x, y in zip(a[pid], b.get(pid, [])))

    first = texts(0)
    assert sum(map(len, first.values())) == 12
    # Sample by sample, not the whole set: vLLM does not promise bitwise-equal logits run to
    # run, and one sample of 12 once took another token (a near-tie) in a CI run, though 14
    # repeated runs here gave all 12 again (bf16 with AMX, and float32 capped to AVX2). Without
    # seeds, or with seeds ignored, next to none of 12 samples of 24 tokens at T=0.8-1.1 match.
    assert identical(texts(0), first) >= 10
    assert identical(texts(1), first) <= 2
    # Within a request the n samples get seeds seed, seed+1, ...: not n copies of one answer.
    assert any(len(set(t)) > 1 for t in first.values())
