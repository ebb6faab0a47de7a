"""`make bench-collector`: collector throughput vs raw consume, and freshness (tests/bench/collector.py)."""
import os

import pytest

pytestmark = pytest.mark.bench


def test_collector_benchmark():
    from tests.bench.collector import main

    main(os.environ.get("TAO_BENCH_COLLECTOR_ARGS", "").split())
