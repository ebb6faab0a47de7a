"""`make bench-gate-vllm`: the gate's engine against vLLM with the candidate as a LoRA
(tests/bench/gate_vllm.py). The run itself needs a trained candidate: --candidate DIR."""
import os

import pytest


@pytest.mark.bench
def test_gate_vllm_benchmark():
    from tests.bench.gate_vllm import main

    args = os.environ.get("TAO_BENCH_GATE_VLLM_ARGS", "").split()
    if "--candidate" not in args:
        pytest.skip("needs TAO_BENCH_GATE_VLLM_ARGS='--candidate DIR' (a trained model directory)")
    main(args)


def test_the_report_gives_both_arms_the_start_and_the_ratio_with_the_machine():
    from tests.bench.gate_vllm import report

    arm = {"answer_tokens": 1000}
    result = {"candidate": "/c/good", "dtype": "float32", "probes": 64, "samples": 16, "temperature": 0.7,
              "max_tokens": 32,
              "engine": {"base": {**arm, "seconds": 90.0, "tokens_per_s": 11.1},
                         "candidate": {**arm, "seconds": 80.0, "tokens_per_s": 12.5}},
              "vllm": {"args": "--enable-lora", "start_s": 120.5, "adapter_extract_s": 3.2,
                       "base": {**arm, "seconds": 45.0, "tokens_per_s": 22.2},
                       "candidate": {**arm, "seconds": 160.0, "tokens_per_s": 6.2}}}
    text = report(result, "python -m tests.bench.gate_vllm --candidate /c/good", "avx512f", 2)
    assert "| base | 90.0 | 11.1 | 45.0 | 22.2 | 2.00x |" in text
    assert "| candidate | 80.0 | 12.5 | 160.0 | 6.2 | 0.50x |" in text
    assert "vLLM start to ready: 120.5 s; adapter extraction 3.2 s" in text
    assert "CPU flags: avx512f" in text and "2 cores" in text and "64 probes" in text and "16 samples" in text
    assert "no AVX-512, no AMX" in report(result, "c", "", 2)


def test_a_failed_vllm_arm_is_reported_with_its_error_not_raised():
    from tests.bench.gate_vllm import report

    arm = {"answer_tokens": 1000, "seconds": 90.0, "tokens_per_s": 11.1}
    result = {"candidate": "/c/good", "dtype": "float32", "probes": 64, "samples": 16, "temperature": 0.7,
              "max_tokens": 32, "engine": {"base": arm, "candidate": arm},
              "vllm": {"args": "--enable-lora", "start_s": 40.0, "adapter_extract_s": 3.2,
                       "base": {**arm, "seconds": 45.0},
                       "candidate": {"failed": "HTTPStatusError: 500 Internal Server Error", "after_s": 301.5,
                                     "alive": False}}}
    text = report(result, "c", "avx512f", 2)
    assert "| base | 90.0 | 11.1 | 45.0 | 11.1 | 2.00x |" in text
    assert "| candidate | 90.0 | 11.1 | failed | - | - |" in text
    assert "vLLM's candidate arm failed** after 301.5 s (server dead): `HTTPStatusError: 500" in text
