"""`make bench-function-fit`: which function the model itself would call (tests/bench/function_fit.py)."""
import os
from pathlib import Path

import pytest


@pytest.mark.bench
def test_function_fit_benchmark():
    from tests.bench.function_fit import main

    main(os.environ.get("TAO_BENCH_FUNCTION_FIT_ARGS", "").split())


def test_the_report_gives_accuracy_on_what_each_margin_covers():
    from tests.bench.function_fit import report

    result = {"cases": 10, "arms": {"raw": {"seconds": 1.5, "rows": [
        {"margin": 0.0, "covered": 10, "right": 7}, {"margin": 2.0, "covered": 4, "right": 4},
        {"margin": 3.0, "covered": 0, "right": 0}]}}}
    text = report(result, "python -m tests.bench.function_fit", Path("/m/SmolLM2"), "float32")
    assert "| raw | 0 | 10 | 7 | 0.700 |" in text and "| raw | 2 | 4 | 4 | 1.000 |" in text
    assert "| raw | 3 | 0 | 0 | - |" in text  # nothing covered: no accuracy, not a division by zero
    assert "CPU flags:" in text and "Command: `python -m tests.bench.function_fit`" in text
