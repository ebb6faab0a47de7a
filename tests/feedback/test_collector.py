"""Collector against a real Tansu broker: exactly once, resume, dead letters, broker restart."""
from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid

import pytest
from kafka import KafkaProducer

from deploy.broker import create_topics, start_tansu
from feedback.procs import free_port, stop
from feedback.collector import Collector
from feedback.store import Store
from schemas.events import SCHEMA_VERSION, ChatCompleted, ChatCompletedPayload, Choice, FeedbackSubmitted, FeedbackSubmittedPayload
from tests.feedback.topics import read_topic

pytestmark = pytest.mark.integration


def chat(i: int) -> ChatCompleted:
    return ChatCompleted(payload=ChatCompletedPayload(
        completion_id=f"cmpl-{uuid.uuid4().hex}", model_version="v0",
        messages=[{"role": "user", "content": f"What is {i} + 1? ünïcode ✓"}], params={"max_tokens": 8},
        choices=[Choice(index=0, text=str(i + 1), finish_reason="stop")], latency_ms=3.0,
    ))


def thumbs(completion_id: str) -> FeedbackSubmitted:
    return FeedbackSubmitted(payload=FeedbackSubmittedPayload(
        feedback_id=uuid.uuid4().hex, completion_id=completion_id, kind="thumbs", value="down"))


def produce(bootstrap: str, records: list[tuple[str, bytes | None, bytes]]) -> list:
    """Send and wait for every ack; returns each record's metadata (topic, partition, offset)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(t, key=k, value=v) for t, k, v in records]
        producer.flush(timeout=30)
        return [f.get(timeout=0) for f in futures]
    finally:
        producer.close(timeout=5)


def traffic(topics: dict[str, str], n_chat: int, n_feedback: int) -> list[tuple[str, bytes, bytes]]:
    chats = [chat(i) for i in range(n_chat)]
    out = [(topics["completions"], e.key, e.to_bytes()) for e in chats]
    out += [(topics["feedback"], f.key, f.to_bytes()) for f in (thumbs(c.payload.completion_id) for c in chats[:n_feedback])]
    return out


def collect_until(collector: Collector, done, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"collector did not finish: {collector.counters.as_dict()}"
        collector.poll_once(200)


def wait_for(done, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stored_raw(store: Store) -> dict[str, str]:
    rows = store.query("SELECT event_id, raw FROM completions UNION ALL SELECT event_id, raw FROM feedback")
    assert len(rows) == len({e for e, _ in rows})
    return dict(rows)


def collector_for(bootstrap: str, store: Store, topics: dict[str, str], **kw) -> Collector:
    return Collector(bootstrap, store, topics=(topics["completions"], topics["feedback"], topics["control"]),
                     deadletter_topic=topics["deadletter"], **kw)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "tao.duckdb")
    yield s
    s.close()


def test_exactly_once_and_resume(kafka_bootstrap, kafka_topics, store):
    first = traffic(kafka_topics, 400, 100)
    produce(kafka_bootstrap, first)
    expected = {json.loads(v)["event_id"]: v.decode() for _, _, v in first}

    c = collector_for(kafka_bootstrap, store, kafka_topics)
    try:
        collect_until(c, lambda: len(stored_raw(store)) >= 500)
        for _ in range(3):  # nothing more arrives
            assert c.poll_once(100) == 0
    finally:
        c.close()
    assert stored_raw(store) == expected  # exactly once, raw byte-for-byte as produced
    assert c.counters.as_dict() == {"consumed": 500, "stored": 500, "duplicates": 0, "deadlettered": 0}
    positions = store.positions()
    assert sum(n for (t, _), n in positions.items() if t == kafka_topics["completions"]) == 400
    assert sum(n for (t, _), n in positions.items() if t == kafka_topics["feedback"]) == 100

    # A new collector on the same DuckDB resumes from the stored positions: it reads only
    # what came after, and an event sent again (producer spill replay) is not stored twice.
    second = traffic(kafka_topics, 80, 20)
    replayed = first[:30]
    produce(kafka_bootstrap, second + replayed)
    expected.update({json.loads(v)["event_id"]: v.decode() for _, _, v in second})

    c2 = collector_for(kafka_bootstrap, store, kafka_topics).start()
    try:
        wait_for(lambda: c2.counters.as_dict()["consumed"] >= 130, what="the resumed collector")
        time.sleep(0.5)  # would it read anything twice?
    finally:
        c2.stop()
    assert c2.counters.as_dict() == {"consumed": 130, "stored": 100, "duplicates": 30, "deadlettered": 0}
    assert stored_raw(store) == expected


def poison(kind: str, i: int) -> bytes:
    """A malformed record of one of the four kinds the collector must dead-letter."""
    ev = json.loads(chat(i).to_bytes())
    if kind == "not_json":
        return [b"not json {", b'{"type": "ChatCompleted", ', b"}{", b"\x00\x01binary", b"[1, 2"][i % 5] + str(i).encode()
    if kind == "missing_field":
        where, name = [(ev, "payload"), (ev["payload"], "completion_id"), (ev["payload"], "messages"),
                       (ev, "type"), (ev["payload"], "model_version")][i % 5]
        del where[name]
    elif kind == "invalid_event":
        [lambda: ev["payload"].__setitem__("latency_ms", "fast"),
         lambda: ev["payload"].__setitem__("choices", "none"),
         lambda: ev.__setitem__("surprise", 1),  # unknown fields are errors
         lambda: ev.__setitem__("type", "NoSuchEvent"),
         lambda: ev.__setitem__("occurred_at", "yesterday")][i % 5]()
    elif kind == "unknown_schema_version":
        ev["schema_version"] = SCHEMA_VERSION + 1 + i % 3
    return json.dumps(ev).encode()


POISON_KINDS = ("not_json", "missing_field", "invalid_event", "unknown_schema_version")


def test_poison_records_go_to_deadletter(kafka_bootstrap, kafka_topics, store):
    """100 malformed records of each kind interleaved with 1,000 good ones: every good one
    lands, every bad one is in the dead-letter topic with its reason and source position."""
    rng = random.Random(5)
    good = traffic(kafka_topics, 800, 200)
    bad = [(rng.choice([kafka_topics["completions"], kafka_topics["feedback"]]), f"bad-{kind}-{i}".encode(),
            poison(kind, i), kind) for kind in POISON_KINDS for i in range(100)]
    mixed = [(t, k, v, None) for t, k, v in good] + bad
    rng.shuffle(mixed)
    sent = produce(kafka_bootstrap, [(t, k, v) for t, k, v, _ in mixed])
    expected_dead = {(md.topic, md.partition, md.offset): (kind, v)
                     for md, (_, _, v, kind) in zip(sent, mixed) if kind is not None}

    c = collector_for(kafka_bootstrap, store, kafka_topics, max_poll_records=97).start()
    try:
        wait_for(lambda: c.counters.as_dict()["consumed"] >= 1400, timeout=60, what="all 1,400 records")
        assert c._thread is not None and c._thread.is_alive()  # nothing crashed
        stats = c.counters.stats()
    finally:
        c.stop()
    assert c.counters.as_dict() == {"consumed": 1400, "stored": 1000, "duplicates": 0, "deadlettered": 400}
    assert stats["deadlettered_by_reason"] == {kind: 100 for kind in POISON_KINDS}
    assert stored_raw(store) == {json.loads(v)["event_id"]: v.decode() for _, _, v in good}
    assert sum(store.positions().values()) == 1400  # positions moved past the bad records too

    # Each with the validator's own message (for whoever fixes the producer): dead_reasons checks it.
    assert dead_reasons(kafka_bootstrap, kafka_topics["deadletter"], 400) == expected_dead  # the record as it was, for a later fix and replay


def test_the_periodic_recheck_is_logged_at_debug_a_first_connect_at_info(kafka_bootstrap, kafka_topics, store,
                                                                         caplog):
    produce(kafka_bootstrap, traffic(kafka_topics, 5, 0))
    c = collector_for(kafka_bootstrap, store, kafka_topics, recheck_s=0.2)
    caplog.set_level(logging.DEBUG, logger="feedback.collector")
    try:
        deadline = time.monotonic() + 10
        while sum("collector reading" in r.getMessage() for r in caplog.records) < 3 and time.monotonic() < deadline:
            c.poll_once(100)
            time.sleep(0.1)
    finally:
        c.close()
    levels = [r.levelname for r in caplog.records if "collector reading" in r.getMessage()]
    assert len(levels) >= 3, levels  # it did reconnect: the recheck still runs
    assert levels[0] == "INFO" and set(levels[1:]) == {"DEBUG"}, levels


def test_stored_position_beyond_partition_end_rereads_from_start(kafka_bootstrap, kafka_topics, store):
    # As after a Tansu restart: DuckDB remembers offsets the (empty) broker never reached.
    store.write_batch([], {(kafka_topics["completions"], p): 1000 for p in range(3)})
    records = traffic(kafka_topics, 30, 0)
    produce(kafka_bootstrap, records)
    c = collector_for(kafka_bootstrap, store, kafka_topics)
    try:
        collect_until(c, lambda: len(stored_raw(store)) >= 30, timeout=10)
    finally:
        c.close()
    assert sum(n for (t, _), n in store.positions().items() if t == kafka_topics["completions"]) == 30


def test_a_different_record_at_the_stored_position_rereads_the_partition(kafka_bootstrap, kafka_topics, store):
    records = traffic(kafka_topics, 60, 0)
    produce(kafka_bootstrap, records)
    c = collector_for(kafka_bootstrap, store, kafka_topics)
    collect_until(c, lambda: len(stored_raw(store)) >= 60)
    c.close()
    before = stored_raw(store)
    positions = store.positions()
    # As if the broker now held another record where the last stored one was.
    tp = (kafka_topics["completions"], 1)
    store.execute("UPDATE consumer_offsets SET last_record = 'another' WHERE topic = ? AND partition = ?", list(tp))

    c = collector_for(kafka_bootstrap, store, kafka_topics)
    try:
        collect_until(c, lambda: c.counters.as_dict()["consumed"] >= positions[tp])
        for _ in range(3):
            c.poll_once(100)
    finally:
        c.close()
    # That partition alone was read again from its start; event_id dedup stored nothing twice.
    assert c.counters.as_dict() == {"consumed": positions[tp], "stored": 0, "duplicates": positions[tp],
                                    "deadlettered": 0}
    assert stored_raw(store) == before and store.positions() == positions


# Tansu keeps its log in memory: restarted, it numbers new records from 0 again, and a
# partition soon holds as many records as before under offsets the collector has stored.
# The collector re-reads the last stored record of each partition and compares.
def test_survives_broker_restart(tmp_path, store):
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    topics = {"completions": "tao.completions", "feedback": "tao.feedback", "control": "tao.control",
              "deadletter": "tao.deadletter"}
    broker = start_tansu(port, log_path=str(tmp_path / "tansu.log"))
    c = None
    try:
        create_topics(bootstrap)
        before = traffic(topics, 50, 10)
        produce(bootstrap, before)
        c = collector_for(bootstrap, store, topics, recheck_s=2).start()
        wait_for(lambda: len(stored_raw(store)) >= 60, what="events before the restart")

        stop(broker)  # memory storage: it comes back empty, offsets start at 0 again
        time.sleep(1.0)
        broker = start_tansu(port, log_path=str(tmp_path / "tansu.log"))
        create_topics(bootstrap)
        after = traffic(topics, 20, 5)
        produce(bootstrap, after)
        wait_for(lambda: len(stored_raw(store)) >= 85, timeout=30, what="events after the restart")
    finally:
        if c is not None:
            c.stop()
        stop(broker)
    assert set(stored_raw(store)) == {json.loads(v)["event_id"] for _, _, v in before + after}


def test_snapshot_and_trainer_read_while_collector_writes(kafka_bootstrap, kafka_topics, store, tmp_path,
                                                          monkeypatch):
    """The worker exports a snapshot and the trainer reads it while the collector writes:
    neither waits for the other, and the snapshot is one consistent moment (its rows are
    exactly those below its positions)."""
    import duckdb

    import feedback.store as store_mod
    from trainer.selection import select_prompts

    first = traffic(kafka_topics, 300, 100)
    sent = produce(kafka_bootstrap, first)
    c = collector_for(kafka_bootstrap, store, kafka_topics, max_poll_records=50).start()
    try:
        wait_for(lambda: c.counters.as_dict()["stored"] >= 400, what="the first 400 events")

        # Hold the export's read transaction open after its first table, as a slow export would.
        inside, release = threading.Event(), threading.Event()
        real_copy = store_mod._copy_table

        def slow_copy(con, table, target):
            real_copy(con, table, target)
            if table == "completions":
                inside.set()
                assert release.wait(60)
        monkeypatch.setattr(store_mod, "_copy_table", slow_copy)
        snapshot: list = []
        exporter = threading.Thread(target=lambda: snapshot.append(store.export_snapshot(tmp_path / "snaps")))
        exporter.start()
        assert inside.wait(30)

        # Meanwhile the collector goes on storing new events, and the trainer reads an
        # earlier snapshot.
        before = c.counters.as_dict()["stored"]
        more = traffic(kafka_topics, 300, 100)
        sent += produce(kafka_bootstrap, more)
        wait_for(lambda: c.counters.as_dict()["stored"] >= before + 400, timeout=30,
                 what="the collector to store while a snapshot is being exported")
        monkeypatch.setattr(store_mod, "_copy_table", real_copy)
        earlier = store.export_snapshot(tmp_path / "earlier")
        selected = select_prompts(earlier, None, limit=1000, replay_fraction=0, seed="t")
        assert selected.train and selected.watermark  # (near-duplicate prompts are merged)
        assert duckdb.connect().execute(f"SELECT count(*) FROM '{earlier}/completions.parquet'").fetchone()[0] == 600

        release.set()
        exporter.join(30)
        assert not exporter.is_alive() and snapshot
    finally:
        release.set()
        c.stop()

    # The held snapshot is the moment its transaction began: 400 rows, all 400 first events.
    snap = snapshot[0]
    con = duckdb.connect()
    ids = {r[0] for r in con.execute(f"SELECT event_id FROM '{snap}/completions.parquet' UNION ALL "
                                    f"SELECT event_id FROM '{snap}/feedback.parquet'").fetchall()}
    offsets = dict(((t, p), n) for t, p, n in con.execute(
        f"SELECT topic, partition, next_offset FROM '{snap}/consumer_offsets.parquet'").fetchall())
    assert ids == {json.loads(v)["event_id"] for _, _, v in first}
    below = {json.loads(v)["event_id"] for (_, _, v), md in zip(first + more, sent)
             if md.offset < offsets.get((md.topic, md.partition), 0)}
    assert ids == below
    assert len(stored_raw(store)) == 800


def dead_reasons(bootstrap: str, topic: str, expect: int) -> dict[tuple[str, int, int], tuple[str, bytes]]:
    """The dead-letter topic as {source position: (reason, record value)}."""
    out = {}
    for r in read_topic(bootstrap, topic, expect):
        h = dict(r.headers)
        assert h["error"]
        out[(h["source_topic"].decode(), int(h["source_partition"]), int(h["source_offset"]))] = (
            h["reason"].decode(), r.value)
    return out


def caught_up(c: Collector) -> bool:
    stats = c.counters.stats()
    return stats["lag"] == 0 and all(p["end"] is not None for p in stats["partitions"])


def test_choice_index_beyond_int32_is_deadlettered_and_the_rest_stored(kafka_bootstrap, kafka_topics, store):
    """Issue 13: a feedback event with choice_index 3,000,000,000 used to pass validation and
    fail the INTEGER column in every retry of its batch, and the collector stored nothing
    after it. Now the schema refuses it: dead-lettered with its reason, the rest stored."""
    before, after = traffic(kafka_topics, 20, 10), traffic(kafka_topics, 21, 0)
    bad = json.loads(thumbs("cmpl-x").to_bytes())
    bad["payload"]["choice_index"] = 3_000_000_000
    # One partition for all feedback: the bad record sits between good ones of the same batch.
    feedback = [(t, b"k", v) for t, _, v in before if t == kafka_topics["feedback"]]
    records = ([r for r in before if r[0] != kafka_topics["feedback"]] + feedback[:5]
               + [(kafka_topics["feedback"], b"k", json.dumps(bad).encode())] + feedback[5:] + after)
    sent = produce(kafka_bootstrap, records)
    good = [r for r in records if b"3000000000" not in r[2]]

    c = collector_for(kafka_bootstrap, store, kafka_topics).start()
    try:
        wait_for(lambda: c.counters.as_dict()["consumed"] >= len(records) and caught_up(c), timeout=60,
                 what="every record and lag 0")
        assert c._thread is not None and c._thread.is_alive()
    finally:
        c.stop()
    assert stored_raw(store) == {json.loads(v)["event_id"]: v.decode() for _, _, v in good}  # all 51 good ones
    md = sent[records.index((kafka_topics["feedback"], b"k", json.dumps(bad).encode()))]
    assert dead_reasons(kafka_bootstrap, kafka_topics["deadletter"], 1) == {
        (md.topic, md.partition, md.offset): ("invalid_event", json.dumps(bad).encode())}
    assert sum(store.positions().values()) == len(records)


def test_a_valid_record_duckdb_cannot_hold_is_deadlettered_narrowed_column_stand_in(
        kafka_bootstrap, kafka_topics, store, monkeypatch):
    """A record that passes validation but that its column refuses (the gap issue 13 found;
    the schema's bounds close the known ones, so a narrowed Arrow column stands in for the
    next one): dead-lettered as "unstorable", the rest of its batch stored, positions exact."""
    import pyarrow as pa

    import feedback.store as store_mod

    narrow = store_mod._ARROW["completions"]
    narrow = narrow.set(narrow.get_field_index("prompt_tokens"), pa.field("prompt_tokens", pa.int8()))
    monkeypatch.setitem(store_mod._ARROW, "completions", narrow)

    records = traffic(kafka_topics, 30, 10)
    bad = []
    for i in (3, 17):  # valid events whose prompt_tokens (200) an int8 cannot hold
        ev = json.loads(chat(100 + i).to_bytes())
        ev["payload"]["usage"]["prompt_tokens"] = 200
        bad.append((kafka_topics["completions"], b"same-partition", json.dumps(ev).encode()))
        records.insert(i, bad[-1])
    sent = produce(kafka_bootstrap, records)

    c = collector_for(kafka_bootstrap, store, kafka_topics).start()
    try:
        wait_for(lambda: c.counters.as_dict()["consumed"] >= len(records) and caught_up(c), timeout=60,
                 what="every record and lag 0")
        assert c._thread is not None and c._thread.is_alive()
        stats = c.counters.stats()
    finally:
        c.stop()
    assert stats["deadlettered_by_reason"] == {"unstorable": 2}
    assert c.counters.as_dict() == {"consumed": 42, "stored": 40, "duplicates": 0, "deadlettered": 2}
    assert stored_raw(store) == {json.loads(r[2])["event_id"]: r[2].decode() for r in records if r not in bad}
    expected = {(md.topic, md.partition, md.offset): ("unstorable", r[2])
                for md, r in zip(sent, records) if r in bad}
    assert dead_reasons(kafka_bootstrap, kafka_topics["deadletter"], 2) == expected
    assert sum(store.positions().values()) == len(records)
