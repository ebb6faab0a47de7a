"""`tao collect --rebuild`: DuckDB re-created from the start of the topics (issue 5).

Real Tansu (this module's own broker, default topic names), the real CLI in a subprocess,
DuckDB on disk. Tansu keeps everything (memory, no retention), so the retention refusal
(`--allow-partial`) is not exercised here.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from deploy.broker import running_tansu
from feedback.collector import Collector
from feedback.store import Store
from tests.feedback.test_collector import collect_until, poison, produce
from tests.feedback.test_kill import events

pytestmark = pytest.mark.integration

EVENT_TABLES = ("completions", "feedback", "model_events")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_tansu(str(tmp_path_factory.mktemp("tansu") / "tansu.log")) as bootstrap:
        yield bootstrap


def dump(path) -> dict[str, list[tuple]]:
    """Every row of every table, sorted: what 'same content' compares."""
    store = Store(path)
    try:
        # As text: the same for every column type (timestamps included).
        return {t: sorted(store.query(f"SELECT COLUMNS(* EXCLUDE (updated_at))::VARCHAR FROM {t}"
                                      if t == "consumer_offsets" else f"SELECT COLUMNS(*)::VARCHAR FROM {t}"))
                for t in EVENT_TABLES + ("consumer_offsets", "cycles")}
    finally:
        store.close()


def tao(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def test_rebuild_recreates_the_same_rows(broker, tmp_path):
    import random

    records = events(3000, random.Random(7))
    records += [("tao.completions", b"bad", poison("invalid_event", i)) for i in range(5)]
    produce(broker, records)
    data = tmp_path / "data"
    db = data / "tao.duckdb"
    store = Store(db)
    try:
        c = Collector(broker, store)
        collect_until(c, lambda: c.counters.as_dict()["consumed"] >= len(records), timeout=60)
        c.close()
        store.execute("INSERT INTO cycles (cycle_id, started_at, status) VALUES ('c1', now(), 'promoted')")
    finally:
        store.close()
    before = dump(db)
    assert sum(len(before[t]) for t in EVENT_TABLES) == 3000 and len(before["cycles"]) == 1
    env = {"TAO_KAFKA_BOOTSTRAP": broker, "TAO_DATA_DIR": str(data)}

    # With the file there: rebuilt beside it, cycle history carried over, the old one kept.
    r = tao(["collect", "--rebuild"], env)
    assert r.returncode == 0, r.stderr
    assert "rebuilt" in r.stdout and "kept as" in r.stdout
    assert dump(db) == before
    backups = list(data.glob("tao.duckdb.before-rebuild-*"))
    assert len(backups) == 1 and dump(backups[0]) == before

    # The file deleted: every event table comes back the same (the cycle history cannot).
    db.unlink()
    r = tao(["collect", "--rebuild"], env)
    assert r.returncode == 0, r.stderr
    after = dump(db)
    assert {t: after[t] for t in EVENT_TABLES + ("consumer_offsets",)} == \
        {t: before[t] for t in EVENT_TABLES + ("consumer_offsets",)}
    assert after["cycles"] == []
    assert not list(data.glob("*.rebuilding*"))


def test_rebuild_refuses_while_the_file_is_held(broker, tmp_path):
    data = tmp_path / "data"
    Store(data / "tao.duckdb").close()
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(60)", str(data / "tao.duckdb")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = tao(["collect", "--rebuild"], {"TAO_KAFKA_BOOTSTRAP": broker, "TAO_DATA_DIR": str(data)})
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 1
    assert "open in another process" in r.stderr and "stop that process first" in r.stderr
    assert json.dumps(sorted(p.name for p in data.iterdir())) == json.dumps(["tao.duckdb"])
