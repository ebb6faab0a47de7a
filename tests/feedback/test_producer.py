"""The event producer's spill journal and record-size guard (issue 13): a torn journal line
costs only itself, and an event too large for Kafka neither blocks the producer nor
disappears without a trace."""
from __future__ import annotations

import json
import logging
import time
import uuid

import pytest

from feedback.producer import MAX_RECORD_BYTES, EventProducer, SpillJournal
from schemas.events import ChatCompleted, ChatCompletedPayload, Choice
from tests.feedback.topics import read_topic


def chat(text: str = "hi") -> ChatCompleted:
    return ChatCompleted(payload=ChatCompletedPayload(
        completion_id=f"cmpl-{uuid.uuid4().hex}", model_version="v0", messages=[{"role": "user", "content": text}],
        choices=[Choice(index=0, text="hello", finish_reason="stop")], latency_ms=1.0))


def rec(topic: str, ev: ChatCompleted) -> tuple[str, bytes, bytes]:
    return topic, ev.key, ev.to_bytes()


def torn_journal(directory, first: tuple[str, bytes, bytes]) -> bytes:
    """A journal with one whole record and a second cut off mid-write (a crash); returns the fragment."""
    journal = SpillJournal(directory)
    journal.append([first])
    whole = json.dumps({"topic": "t", "key": "k", "value": chat("lost").to_bytes().decode()}).encode()
    fragment = whole[: len(whole) // 2]
    with open(journal.path, "ab") as f:
        f.write(fragment)
    return fragment


def test_a_torn_last_line_does_not_swallow_the_next_event(tmp_path, caplog):
    first, new = rec("t", chat("first")), rec("t", chat("after the crash"))
    fragment = torn_journal(tmp_path, first)
    journal = SpillJournal(tmp_path)  # the process that comes back after the crash
    journal.append([new])
    with caplog.at_level(logging.ERROR, logger="feedback.producer"):
        path, records = journal.take()
    assert records == [first, new]  # the new event was appended after, not onto, the torn line
    assert journal.torn == 1
    assert any("torn line 2" in r.getMessage() and repr(fragment[:20])[2:-1] in r.getMessage()
               for r in caplog.records)


def test_an_event_that_cannot_be_serialised_is_counted_never_raised(tmp_path):
    producer = EventProducer("127.0.0.1:1", tmp_path)  # not started: emit only queues
    ev = chat("lone \ud800 surrogate")  # the schema keeps messages as sent (content: Any)
    producer.emit("t", ev)  # a request handler must not fail after its answer was made
    assert producer.counters.as_dict()["dropped"] == 1 and producer.counters.as_dict()["queued"] == 0


def wait_for(done, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.integration
def test_torn_journal_replays_the_event_after_it(kafka_bootstrap, kafka_topics, tmp_path):
    topic = kafka_topics["completions"]
    first, new = rec(topic, chat("first")), rec(topic, chat("after the crash"))
    torn_journal(tmp_path, first)
    SpillJournal(tmp_path).append([new])  # spilled by the gateway that restarted after the crash
    producer = EventProducer(kafka_bootstrap, tmp_path).start()  # replays what it finds
    try:
        wait_for(lambda: producer.counters.as_dict()["replayed"] >= 2, what="the replay")
    finally:
        producer.close()
    assert {r.value for r in read_topic(kafka_bootstrap, topic, 2)} == {first[2], new[2]}
    counts = producer.counters.as_dict()
    assert counts["torn"] == 1 and counts["replayed"] == 2 and counts["dropped"] == 0
    assert not SpillJournal(tmp_path).pending()


@pytest.mark.integration
def test_an_event_too_large_for_kafka_is_set_aside_and_blocks_nothing(kafka_bootstrap, kafka_topics, tmp_path):
    """A ChatCompleted of a ~1 MB prompt (the gateway's largest body) plus its answer is
    more than a Kafka record may be: it used to fail every send and replay, closing the
    connection each time. Now it is kept in oversized.jsonl and the rest flows."""
    topic = kafka_topics["completions"]
    producer = EventProducer(kafka_bootstrap, tmp_path).start()
    try:
        small = [chat(f"small {i}") for i in range(5)]
        big = chat("x" * 990_000 + "é" * 10_000)  # under 1 MB of text, over the limit as an event
        assert len(big.to_bytes()) > MAX_RECORD_BYTES
        for ev in small[:2] + [big] + small[2:]:
            producer.emit(topic, ev)
        wait_for(lambda: producer.counters.as_dict()["sent"] + producer.counters.as_dict()["oversized"] >= 6,
                 what="every event handled")
        later = [chat(f"later {i}") for i in range(5)]
        for ev in later:
            producer.emit(topic, ev)
        wait_for(lambda: producer.counters.as_dict()["sent"] >= 10, what="the events after it")
    finally:
        producer.close()
    counts = producer.counters.as_dict()
    assert counts["oversized"] == 1 and counts["sent"] == 10
    assert counts["spilled"] == 0 and counts["dropped"] == 0 and not producer.journal.pending()
    assert {r.value for r in read_topic(kafka_bootstrap, topic, 10)} == {e.to_bytes() for e in small + later}
    [kept] = producer.journal.oversized_path.read_text().splitlines()
    assert json.loads(kept)["value"].encode() == big.to_bytes()  # not lost: there for an operator
