"""The collector's writer thread (feedback/writer.py): a batch waiting for it is never lost
nor stored twice, whether the collector is killed, stopped or its write fails meanwhile.

Real Tansu (the session broker, topics of each test's own) and DuckDB files on disk. The
DuckDB write is slowed (a sleep before the real transaction) so the reader is a batch ahead.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from feedback.store import Store
from feedback.writer import BatchWriter
from tests.feedback.test_collector import collect_until, collector_for, produce, stored_raw, traffic, wait_for

pytestmark = pytest.mark.integration

# The child: a collector whose every DuckDB write first sleeps, printing "queued N" each time
# the reader has handed over a batch (N: records then waiting for the writer).
CHILD = """
import sys, time
import feedback.store as store_mod
import feedback.writer as writer_mod
from feedback.collector import Collector

real_write, real_put = store_mod.Store.write_batch, writer_mod.BatchWriter.put

def slow_write(self, *a, **kw):
    time.sleep(0.3)
    return real_write(self, *a, **kw)

def put(self, batch):
    real_put(self, batch)
    print("queued", self.waiting, flush=True)

store_mod.Store.write_batch, writer_mod.BatchWriter.put = slow_write, put
bootstrap, db, completions, feedback, control, deadletter = sys.argv[1:]
c = Collector(bootstrap, store_mod.Store(db), topics=(completions, feedback, control), deadletter_topic=deadletter,
              max_poll_records=50)
while True:
    c.poll_once(200)
"""


def expected_of(records) -> dict[str, str]:
    return {json.loads(v)["event_id"]: v.decode() for _, _, v in records}


def test_killed_with_a_batch_queued_for_the_writer(kafka_bootstrap, kafka_topics, tmp_path):
    records = traffic(kafka_topics, 800, 200)
    produce(kafka_bootstrap, records)
    db = tmp_path / "tao.duckdb"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, kafka_bootstrap, str(db), kafka_topics["completions"], kafka_topics["feedback"],
         kafka_topics["control"], kafka_topics["deadletter"]],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        full = 0
        for line in child.stdout:  # a batch waits for the writer while another is being written
            full += line.startswith("queued") and int(line.split()[1]) > 0
            if full == 3:
                break
        assert full == 3, "the reader never got a batch ahead of the writer"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)

    store = Store(db)
    try:
        before = sum(store.positions().values())
        assert 0 < before < len(records)  # killed mid-stream, with read batches not stored
        c = collector_for(kafka_bootstrap, store, kafka_topics)
        try:
            collect_until(c, lambda: sum(store.positions().values()) >= len(records), timeout=60)
            c.drain()
        finally:
            c.close()
        assert stored_raw(store) == expected_of(records)  # every event once, byte for byte
        assert sum(store.positions().values()) == len(records)
        assert c.counters.as_dict()["duplicates"] == 0  # resumed exactly where the stored rows end
    finally:
        store.close()


def slowed(monkeypatch, fail_on: int | None = None) -> list[int]:
    """Slow every DuckDB write down (and fail the `fail_on`-th); returns the sizes written."""
    import feedback.store as store_mod

    real = store_mod.Store.write_batch
    written: list[int] = []

    def write(self, events, positions, fingerprints=None):
        time.sleep(0.2)
        if fail_on is not None and len(written) + 1 == fail_on:
            written.append(-1)
            raise RuntimeError("disk full (a stand-in)")
        written.append(len(events))
        return real(self, events, positions, fingerprints)

    monkeypatch.setattr(store_mod.Store, "write_batch", write)
    return written


def test_stopped_with_a_batch_queued_writes_it_first(kafka_bootstrap, kafka_topics, tmp_path, monkeypatch):
    records = traffic(kafka_topics, 300, 100)
    produce(kafka_bootstrap, records)
    slowed(monkeypatch)
    store = Store(tmp_path / "tao.duckdb")
    try:
        c = collector_for(kafka_bootstrap, store, kafka_topics, max_poll_records=50).start()
        wait_for(lambda: c._writer.waiting > 0, what="a batch waiting behind a write")
        c.stop()  # waits for the batches read, then ends both threads
        stopped_at = sum(store.positions().values())
        assert c.counters.as_dict()["consumed"] == stopped_at  # everything read was stored
        assert stopped_at < len(records)
        monkeypatch.undo()
        c = collector_for(kafka_bootstrap, store, kafka_topics)
        try:
            collect_until(c, lambda: sum(store.positions().values()) >= len(records))
        finally:
            c.close()
        assert c.counters.as_dict() == {"consumed": len(records) - stopped_at, "stored": len(records) - stopped_at,
                                        "duplicates": 0, "deadlettered": 0}
        assert stored_raw(store) == expected_of(records)
    finally:
        store.close()


def test_a_failed_write_drops_the_queued_batch_and_rereads_it(kafka_bootstrap, kafka_topics, tmp_path, monkeypatch):
    records = traffic(kafka_topics, 300, 100)
    produce(kafka_bootstrap, records)
    written = slowed(monkeypatch, fail_on=3)
    store = Store(tmp_path / "tao.duckdb")
    try:
        c = collector_for(kafka_bootstrap, store, kafka_topics, max_poll_records=50).start()
        try:
            wait_for(lambda: sum(store.positions().values()) >= len(records), timeout=60, what="every record")
            c.drain()
            assert c._thread is not None and c._thread.is_alive()
        finally:
            c.stop()
        assert -1 in written  # the third write failed, with the reader a batch ahead of it
        assert stored_raw(store) == expected_of(records)  # the dropped batches were read again: all there, once
        assert sum(store.positions().values()) == len(records)
    finally:
        store.close()


class Items(list):
    def merge(self, later: "Items") -> "Items":
        self.extend(later)
        return self


def test_batches_handed_over_during_a_write_are_merged_up_to_the_limit():
    """A reader faster than the writer: what it hands over meanwhile becomes one batch of at
    most `limit` records; past that it waits (bounded memory)."""
    release = threading.Event()
    seen: list[list[int]] = []
    writer: BatchWriter[Items] = BatchWriter(lambda b: (release.wait(10), seen.append(list(b))), limit=2)
    writer.put(Items([1]))
    wait_for(lambda: writer.waiting == 0, what="the writer to take the first batch")
    writer.put(Items([2]))
    writer.put(Items([3]))  # merged: 2 records pending, at the limit
    fourth = threading.Thread(target=writer.put, args=(Items([4]),))
    fourth.start()
    time.sleep(0.2)
    assert fourth.is_alive() and writer.waiting == 2  # blocked: no room
    release.set()
    fourth.join(5)
    writer.drain()
    assert seen == [[1], [2, 3], [4]]
    assert writer.stop() is None


def test_a_failed_write_is_raised_to_the_reader_and_drops_what_was_pending():
    go = threading.Event()
    seen: list[list[int]] = []

    def write(b: Items) -> None:
        go.wait(10)
        if 1 in b:
            raise RuntimeError("boom")
        seen.append(list(b))

    writer: BatchWriter[Items] = BatchWriter(write, limit=10)
    writer.put(Items([1]))
    wait_for(lambda: writer.waiting == 0, what="the writer to take the first batch")
    writer.put(Items([2]))
    go.set()
    with pytest.raises(RuntimeError, match="boom"):
        writer.drain()
    assert seen == []  # 2 came after the failure: dropped, to be read again
    writer.put(Items([3]))  # and the writer goes on once the caller has seen the error
    writer.drain()
    assert seen == [[3]] and writer.stop() is None
