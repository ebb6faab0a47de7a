"""`make bench-gate-sampling`: the gate's engine against transformers' generate (tests/bench/gate_sampling.py)."""
import os
from pathlib import Path

import pytest


@pytest.mark.bench
def test_gate_sampling_benchmark():
    from tests.bench.gate_sampling import main

    main(os.environ.get("TAO_BENCH_GATE_SAMPLING_ARGS", "").split())


def test_the_report_gives_each_arm_and_the_ratio_with_the_machine():
    from tests.bench.gate_sampling import report

    arm = {"answers": 8, "answer_tokens": 100}
    result = {"probes": 8, "samples": 4, "max_new_tokens": 32, "temperature": 0.7, "arms": {
        "greedy/transformers_generate": {**arm, "seconds": 4.0, "tokens_per_s": 25.0, "ratio": 2.0},
        "greedy/engine": {**arm, "seconds": 2.0, "tokens_per_s": 50.0, "ratio": 2.0, "same_as_reference": 8},
        "sampled/transformers_generate": {**arm, "answers": 32, "seconds": 9.0, "tokens_per_s": 11.1, "ratio": 3.0},
        "sampled/engine": {**arm, "answers": 32, "seconds": 3.0, "tokens_per_s": 33.3, "ratio": 3.0}}}
    text = report(result, "python -m tests.bench.gate_sampling", Path("/m/SmolLM2"), "float32", "avx512f", 2)
    assert "| sampled | engine | 3.0 | 32 | 100 | 33.3 | 3.00x |" in text
    assert "Greedy answers equal to transformers': 8/8." in text
    assert "CPU flags: avx512f" in text and "2 cores" in text and "Command: `python -m tests.bench.gate_sampling`" in text
    assert "no AVX-512, no AMX" in report(result, "c", Path("/m"), "float32", "", 2)


def test_the_report_gives_the_coupling_of_each_draw_when_measured():
    from tests.bench.gate_sampling import report

    arm = {"answers": 8, "answer_tokens": 100, "seconds": 2.0, "tokens_per_s": 50.0, "ratio": 1.0}
    iv = {"value": 0.003, "low": -0.011, "high": 0.018, "n": 220, "confidence": 0.95}
    result = {"probes": 8, "samples": 4, "max_new_tokens": 32, "temperature": 0.7,
              "arms": {"greedy/transformers_generate": arm, "greedy/engine": {**arm, "same_as_reference": 8},
                       "sampled/transformers_generate": arm, "sampled/engine": arm},
              "coupling": {"candidate": "/c/good", "probes": 220, "samples": 8, "draws": {
                  "gumbel_max": {"seconds": 535.0, "identical": 0.4153, "vs_parent": iv, "width_points": 2.9},
                  "inverse_cdf": {"seconds": 469.0, "identical": 0.2091, "vs_parent": iv, "width_points": 3.3}}}}
    text = report(result, "c", Path("/m"), "float32", "avx512f", 2)
    assert "Candidate `/c/good`; all 220 probes, 8 samples each" in text
    assert "| gumbel_max | 41.5% | +0.3 [-1.1, +1.8] | 2.9 | 535.0 |" in text
    assert "| inverse_cdf | 20.9% |" in text
    assert "Coupling" not in report({**result, "coupling": None}, "c", Path("/m"), "float32", "avx512f", 2)
