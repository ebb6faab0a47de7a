"""Collector against a real Tansu broker: exactly once, resume, dead letters, broker restart."""
from __future__ import annotations

import json
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from deploy.broker import create_topics, start_tansu
from deploy.procs import free_port, stop
from feedback.collector import Collector
from feedback.store import Store
from schemas.events import ChatCompleted, ChatCompletedPayload, Choice, FeedbackSubmitted, FeedbackSubmittedPayload

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


def produce(bootstrap: str, records: list[tuple[str, bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(t, key=k, value=v) for t, k, v in records]
        producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=0)
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


def collector_for(bootstrap: str, store: Store, topics: dict[str, str]) -> Collector:
    return Collector(bootstrap, store, topics=(topics["completions"], topics["feedback"], topics["control"]),
                     deadletter_topic=topics["deadletter"])


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


def test_bad_records_go_to_deadletter(kafka_bootstrap, kafka_topics, store):
    good = traffic(kafka_topics, 20, 5)
    bad_field = json.loads(chat(0).to_bytes())
    bad_field["payload"]["latency_ms"] = "fast"
    newer = json.loads(chat(0).to_bytes())
    newer["schema_version"] = 99
    t = kafka_topics["completions"]
    bad = [
        (t, b"k1", b"not json {"),
        (t, b"k2", json.dumps(bad_field).encode()),
        (t, b"k3", json.dumps(newer).encode()),
        (kafka_topics["feedback"], b"k4", b'{"type": "FeedbackSubmitted"}'),
    ]
    produce(kafka_bootstrap, good[:10] + bad + good[10:])

    c = collector_for(kafka_bootstrap, store, kafka_topics)
    try:
        collect_until(c, lambda: c.counters.as_dict()["consumed"] >= 29)
    finally:
        c.close()
    assert c.counters.as_dict() == {"consumed": 29, "stored": 25, "duplicates": 0, "deadlettered": 4}
    assert set(stored_raw(store)) == {json.loads(v)["event_id"] for _, _, v in good}
    # Positions moved past the bad records too.
    assert sum(store.positions().values()) == 29

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tp = TopicPartition(kafka_topics["deadletter"], 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        dead = []
        deadline = time.monotonic() + 10
        while len(dead) < 4 and time.monotonic() < deadline:
            for recs in consumer.poll(200).values():
                dead += recs
    finally:
        consumer.close()
    by_key = {r.key: (r.value, dict(r.headers)) for r in dead}
    assert {k: h["reason"] for k, (_, h) in by_key.items()} == {
        b"k1": b"not_json", b"k2": b"invalid_event", b"k3": b"unknown_schema_version", b"k4": b"invalid_event"}
    value, headers = by_key[b"k2"]
    assert value == bad[1][2]  # the record as it was, for a later fix and replay
    assert b"latency_ms" in headers["error"]
    assert headers["source_topic"] == t.encode()
    assert int(headers["source_offset"]) >= 0 and int(headers["source_partition"]) >= 0


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


# Open issue: in about 3 runs of 5, after the restart every fetch (even from a freshly built
# consumer, offsets reset to 0) gets no answer and nothing more is collected; a plain fresh
# consumer on a restarted Tansu does read. Kept visible (not strict) until understood.
@pytest.mark.xfail(reason="collector sometimes fetches nothing after a Tansu restart", strict=False)
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
        c = collector_for(bootstrap, store, topics).start()
        wait_for(lambda: len(stored_raw(store)) >= 60, what="events before the restart")

        stop(broker)  # memory storage: it comes back empty, offsets start at 0 again
        time.sleep(1.0)
        broker = start_tansu(port, log_path=str(tmp_path / "tansu.log"))
        create_topics(bootstrap)
        after = traffic(topics, 20, 5)
        produce(bootstrap, after)
        wait_for(lambda: len(stored_raw(store)) >= 85, timeout=15, what="events after the restart")
    finally:
        if c is not None:
            c.stop()
        stop(broker)
    assert set(stored_raw(store)) == {json.loads(v)["event_id"] for _, _, v in before + after}
