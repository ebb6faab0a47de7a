"""`make bench-console`: each console page with 100,000 completions in DuckDB (tests/bench/console.py)."""
import os

import pytest


@pytest.mark.bench
def test_console_benchmark():
    from tests.bench.console import main

    main(os.environ.get("TAO_BENCH_CONSOLE_ARGS", "").split())


def test_console_benchmark_small_run_writes_its_report(tmp_path):
    """A quick run (2,000 completions) through the same code, into a tmp dir: part of `make test`."""
    from tests.bench.console import main

    main(["--completions", "2000", "--cycles", "3", "--repeats", "2", "--out", str(tmp_path)])
    text = (tmp_path / "console.md").read_text()
    assert "| traffic |" in text and "| cycles/c0002 |" in text and "CPU flags" in text
