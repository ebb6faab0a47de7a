"""Kill test: the collector process is SIGKILLed at 5 random moments while it consumes
20,000 events (at random points of its progress); each time it is started again, and at the end DuckDB holds every event
exactly once, byte for byte as produced (issue 5).

Real Tansu (a broker of this test's own, default topic names) and `python -m feedback.collect`,
the process `tao collect` runs, with its DuckDB file on disk.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import sys

import pytest

from deploy.broker import running_tansu
from feedback.procs import free_port, spawn, stop
from feedback.store import Store
from schemas.events import TOPICS, ModelPromoted, ModelPromotedPayload
from tests.feedback.metrics import metrics_at
from tests.feedback.test_collector import chat, produce, stored_raw, thumbs, wait_for

pytestmark = pytest.mark.integration

N_EVENTS = 20_000
KILLS = 5


def events(n: int, rng: random.Random) -> list[tuple[str, bytes, bytes]]:
    """n events: ~70% completions, ~29% feedback (some sent before their completion), a few promotions."""
    out = []
    chats = []
    while len(out) < n:
        r = rng.random()
        if r < 0.005:
            ev = ModelPromoted(payload=ModelPromotedPayload(version=f"v{len(out)}", artifact_path="/m"))
            out.append((TOPICS["control"], ev.key, ev.to_bytes()))
        elif r < 0.3 and chats:
            fb = thumbs(rng.choice(chats).payload.completion_id)
            out.append((TOPICS["feedback"], fb.key, fb.to_bytes()))
        else:
            c = chat(len(out))
            chats.append(c)
            out.append((TOPICS["completions"], c.key, c.to_bytes()))
    return out


def metrics(port: int) -> dict[str, float]:
    """The collector's Prometheus samples, name{labels} -> value."""
    return metrics_at(f"http://127.0.0.1:{port}")


def test_collector_killed_five_times_stores_each_event_once(tmp_path):
    rng = random.Random(int(os.environ.get("TAO_KILL_SEED", "20261124")))
    proc = None
    with running_tansu(str(tmp_path / "tansu.log")) as bootstrap:
        try:
            records = events(N_EVENTS, rng)
            expected = {json.loads(v)["event_id"]: v.decode() for _, _, v in records}
            assert len(expected) == N_EVENTS

            produce(bootstrap, records)  # a backlog: the collector is busy from its first poll to its last

            metrics_port = free_port()
            log_path = tmp_path / "collector.log"
            env = {"TAO_KAFKA_BOOTSTRAP": bootstrap, "TAO_DATA_DIR": str(tmp_path / "data"),
                   "TAO_COLLECTOR_MAX_POLL_RECORDS": "400", "TAO_COLLECTOR_METRICS_PORT": str(metrics_port),
                   "PYTHONUNBUFFERED": "1"}

            def start():
                n = log_path.read_text().count("collector reading") if log_path.exists() else 0
                p = spawn([sys.executable, "-m", "feedback.collect"], env=env, log_path=str(log_path))
                wait_for(lambda: log_path.read_text().count("collector reading") > n or p.poll() is not None,
                         timeout=60, what="the collector to connect")
                assert p.poll() is None, log_path.read_text()[-3000:]
                return p

            def committed() -> float:
                """Records covered by the positions committed in DuckDB (all runs so far)."""
                return sum(v for k, v in metrics(metrics_port).items() if k.startswith("tao_collector_position{"))

            # Kill at 5 random points of progress, each between two commits or in the middle
            # of one (a batch of 400 is a transaction of tens of milliseconds).
            for point in sorted(rng.sample(range(1000, N_EVENTS - 1000), KILLS)):
                proc = start()
                wait_for(lambda: committed() >= point, timeout=60, what=f"{point} records committed")
                assert proc.poll() is None
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
            proc = start()

            wait_for(lambda: committed() >= N_EVENTS, timeout=120, what="the last collector to catch up")
            m = metrics(metrics_port)
            assert all(v == 0 for k, v in m.items() if k.startswith("tao_collector_lag{"))
            stop(proc)  # SIGTERM: a clean stop releases the DuckDB file
            assert proc.returncode == 0, log_path.read_text()[-3000:]
        finally:
            if proc is not None:
                stop(proc)

    log = log_path.read_text()
    # Each restart resumed from the positions the killed run had committed: the kills
    # landed mid-stream, not before the first or after the last write.
    resumed = [int(n) for n in re.findall(r"resumed from DuckDB at (\d+) records", log)]
    assert len(resumed) == KILLS + 1 and resumed[0] == 0, log[-3000:]
    assert resumed == sorted(resumed) and all(0 < r < N_EVENTS for r in resumed[1:]), resumed

    store = Store(tmp_path / "data" / "tao.duckdb")
    try:
        got = stored_raw(store)
        got.update(dict(store.query("SELECT event_id, raw FROM model_events")))
        rows = sum(store.query(f"SELECT count(*) FROM {t}")[0][0] for t in ("completions", "feedback", "model_events"))
        assert sum(store.positions().values()) == N_EVENTS
    finally:
        store.close()
    assert rows == N_EVENTS  # each event once
    assert got == expected   # byte for byte as produced
