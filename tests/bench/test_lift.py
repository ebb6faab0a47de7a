"""`make bench-lift`: the TAO lift benchmark (tests/bench/lift.py). Hours on a 2-core CPU."""
import os

import pytest

pytestmark = pytest.mark.bench


def test_lift_benchmark():
    from tests.bench.lift import main

    args = os.environ.get("TAO_BENCH_LIFT_ARGS", "--cycles 3 --ablations all").split()
    main(args)
