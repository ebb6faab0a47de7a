"""One full TAO cycle whose candidate is deliberately broken (trained with a learning rate
thousands of times too high): the gate must reject it, name the probe suite's figures, and
publish nothing.
Real vLLM (the shared stack's) for exploration, real TRL training, real generation."""
from __future__ import annotations

import pytest

from feedback.procs import free_port
from feedback.store import Store
from schemas.events import ChatCompleted, ChatCompletedPayload
from tests.e2e.traffic import extraction_prompts
from feedback.registry import get_version
from trainer.settings import WorkerSettings
from trainer.worker import CycleRunner

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def logged(prompt: str, i: int):
    ev = ChatCompleted(tenant=f"tenant-{i % 3}", payload=ChatCompletedPayload(
        completion_id=f"chatcmpl-gate-{i}", model_version="base", messages=[{"role": "user", "content": prompt}],
        choices=[{"index": 0, "text": "I am not sure what you mean."}], latency_ms=1.0))
    return ev, ev.model_dump_json()


def test_gate_rejects_a_broken_candidate(stack, tmp_path, gate_cache):
    store = Store(tmp_path / "tao.duckdb")
    try:
        store.write_batch([logged(p, i) for i, p in enumerate(extraction_prompts(20, seed=3))], {})
        settings = WorkerSettings(
            data_dir=tmp_path, explore_url=stack.info["vllm"],
            kafka_bootstrap=f"127.0.0.1:{free_port()}",  # nothing listens: a wrong promotion would fail loudly
            learning_rate=0.5, epochs=1,                  # the deliberate break
            # `copy` too: it holds each value to the request, so some candidates are choosable
            # (every value grounded). With plain and scaffold alone, a fresh-clone CI run
            # (2026-12-08) drew none among 17 prompts x 4 (base answers like "item":
            # "Doe-A-Gill-B"): 0 pairs, a skipped cycle and no candidate to gate.
            explore_strategies=["plain", "scaffold", "copy"], samples_per_strategy=2, explore_max_tokens=96,
            gate_max_tokens=32, min_pairs=2, gate_cache_dir=gate_cache,
            gate_probe_samples=0, gate_heldout_samples=0,  # greedy: as the stack's
            holdout_fraction=0.3)
        result = CycleRunner(settings, store).run(force=True)
        assert result["status"] == "rejected", result
        gate = result["gate"]
        assert gate["promote"] is False
        reasons = " | ".join(gate["reasons"])
        assert "probe suite vs parent" in reasons and "probe suite vs base" in reasons, reasons
        probes = gate["probes"]
        assert probes["pass_rate"]["candidate"] < probes["pass_rate"]["parent"] == probes["pass_rate"]["base"], probes
        assert probes["vs_parent"]["high"] < 0 and probes["checked"] >= 200, probes
        assert probes["drift"]["value"] < 0, probes["drift"]  # it would no longer say what the parent said
        # The candidate's probe answers are cached beside the base's (for a next cycle, were it promoted).
        assert len(list(gate_cache.glob("*.json"))) >= 2
        assert "publish" not in result["timings"]
        meta = get_version(tmp_path, result["version"])
        assert meta.status == "rejected" and meta.gate["reasons"] == gate["reasons"]
        assert store.query("SELECT status FROM cycles") == [("rejected",)]
        assert store.query("SELECT count(*) FROM model_events") == [(0,)]
    finally:
        store.close()
