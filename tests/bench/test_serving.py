"""`make bench-serving`: gateway overhead and swaps under load (tests/bench/serving.py)."""
import os

import pytest

pytestmark = pytest.mark.bench


def test_serving_benchmark():
    from tests.bench.serving import main

    main(os.environ.get("TAO_BENCH_SERVING_ARGS", "").split())
