"""The collector: copies events from Kafka into DuckDB, exactly once.

Reads every partition of tao.completions, tao.feedback and tao.control, validates each
record with `schemas.events.parse_event`, and writes the rows together with the next
offset per partition in one DuckDB transaction (`Store.write_batch`). On start it seeks to
the positions stored in DuckDB, so a crash anywhere loses nothing and duplicates nothing;
events are also deduplicated by `event_id` (the producer's spill replay may resend some).
Records it cannot parse go to the dead-letter topic with a `reason` header; the position
moves past them.

It runs as a thread of the worker process (`Collector(...).start()`), next to the scheduler.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from pydantic import ValidationError

from feedback.kafka import KAFKA_API_VERSION
from feedback.store import RawEvent, Store
from schemas.events import TOPICS, UnknownSchemaVersion, parse_event

log = logging.getLogger(__name__)

COLLECTED_TOPICS = (TOPICS["completions"], TOPICS["feedback"], TOPICS["control"])


@dataclass
class CollectorCounters:
    consumed: int = 0       # records read from Kafka, good or bad
    stored: int = 0         # rows inserted into DuckDB
    duplicates: int = 0     # valid events whose event_id was already stored
    deadlettered: int = 0   # records sent to the dead-letter topic
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, n in deltas.items():
                setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return {k: getattr(self, k) for k in ("consumed", "stored", "duplicates", "deadlettered")}


class Collector:
    def __init__(
        self,
        bootstrap: str,
        store: Store,
        topics: tuple[str, ...] = COLLECTED_TOPICS,
        deadletter_topic: str = TOPICS["deadletter"],
    ):
        self.bootstrap = bootstrap
        self.store = store
        self.topics = tuple(topics)
        self.deadletter_topic = deadletter_topic
        self.counters = CollectorCounters()
        self._consumer = None
        self._producer = None
        self._thread: threading.Thread | None = None
        # Partitions found beyond their end: the next connect reads them from the start.
        self._rewind: set[tuple[str, int]] = set()
        self._stop = threading.Event()

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> "Collector":
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(self._stop,), name="tao-collector", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.close()

    def close(self) -> None:
        """Drop the Kafka clients; the next poll_once reconnects and seeks to stored positions."""
        consumer, producer, self._consumer, self._producer = self._consumer, self._producer, None, None
        try:
            if consumer is not None:
                consumer.close(autocommit=False, timeout_ms=2000)
            if producer is not None:
                producer.close(timeout=2)
        except Exception:
            log.debug("error closing a Kafka client", exc_info=True)

    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set. Any failure (broker away, DuckDB error) drops the
        clients and reconnects with backoff: the consumer's in-memory position may be past
        rows that were never stored, and only the positions in DuckDB are to be trusted."""
        backoff = 0.5
        failing = False
        try:
            while not stop.is_set():
                try:
                    self.poll_once(500)
                    if failing:
                        log.info("collector running again against Kafka at %s", self.bootstrap)
                        failing = False
                    backoff = 0.5
                except Exception as e:
                    failing = True
                    log.warning("collector: %s: %s; reconnecting to Kafka at %s in %.1fs",
                                type(e).__name__, e, self.bootstrap, backoff)
                    self.close()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            self.close()

    # -- one batch ------------------------------------------------------------------
    def poll_once(self, timeout_ms: int = 500) -> int:
        """Read one batch, store it, dead-letter what does not parse. Returns records read."""
        if self._consumer is None:
            self._connect()
        consumer = self._consumer
        batches = consumer.poll(timeout_ms=timeout_ms)
        good: list[RawEvent] = []
        positions: dict[tuple[str, int], int] = {}
        deadletters = []
        n = 0
        for tp, records in batches.items():
            for rec in records:
                n += 1
                try:
                    if rec.value is None:
                        raise ValueError("record has no value")
                    raw = rec.value.decode("utf-8")
                    good.append((parse_event(raw), raw))
                except (ValidationError, UnknownSchemaVersion, ValueError) as e:
                    deadletters.append(self._deadletter(rec, e))
            if records:
                positions[(tp.topic, tp.partition)] = records[-1].offset + 1
        if deadletters:
            # Acknowledged before the position moves past them: a bad record is never lost.
            self._producer.flush(timeout=10)
            for fut in deadletters:
                fut.get(timeout=0)  # raises if the broker refused it
        inserted = self.store.write_batch(good, positions) if n else 0
        self.counters.add(consumed=n, stored=inserted, duplicates=len(good) - inserted,
                          deadlettered=len(deadletters))
        self._reset_positions_past_end()
        return n

    # -- internals ------------------------------------------------------------------
    def _connect(self) -> None:
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        # No consumer group: joining one takes ~23 s on Tansu, and the positions that
        # count are the ones stored in DuckDB with the rows, not committed offsets.
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap, client_id="tao-collector", group_id=None,
            enable_auto_commit=False, auto_offset_reset="earliest", api_version=KAFKA_API_VERSION,
            reconnect_backoff_max_ms=2000, request_timeout_ms=15000,
        )
        try:
            tps = []
            for topic in self.topics:
                parts = consumer.partitions_for_topic(topic)
                if not parts:
                    raise RuntimeError(f"topic {topic} does not exist on {self.bootstrap} (tao up creates it)")
                tps += [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            stored = self.store.positions()
            resumed = 0
            for tp in tps:
                pos = stored.get((tp.topic, tp.partition))
                if pos is None or (tp.topic, tp.partition) in self._rewind:
                    consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, pos)
                    resumed += 1
            # A stored position beyond the partition's end (Tansu restarted empty) is
            # found from the first fetch response, see _reset_positions_past_end.
            producer = KafkaProducer(
                bootstrap_servers=self.bootstrap, client_id="tao-collector-deadletter", acks="all",
                api_version=KAFKA_API_VERSION,
                max_block_ms=5000, request_timeout_ms=10000,
            )
        except BaseException:
            consumer.close()
            raise
        self._consumer, self._producer = consumer, producer
        self._rewind.clear()
        log.info("collector reading %d partitions of %s from %s (%d resumed from DuckDB, %d from the beginning)",
                 len(tps), ", ".join(self.topics), self.bootstrap, resumed, len(tps) - resumed)

    def _reset_positions_past_end(self) -> None:
        """Re-read from the beginning any partition whose end is behind our position.

        Tansu keeps data in memory, so a restarted broker starts every partition at 0 again
        while DuckDB (and this consumer) still point further on; Tansu answers such fetches
        with no records and no error, so without this the collector would wait silently
        until the partition grew past the old position. Re-reading is safe: event_id dedup.
        The end is the high watermark of the last fetch response: Tansu's ListOffsets
        (`end_offsets`) answers base offset of the last batch + 1, too low to compare with.
        The clients are rebuilt rather than seeking in place: a consumer that lived through
        the broker restart (its topics recreated under new ids) was seen to fetch nothing
        more after seek_to_beginning.
        """
        consumer = self._consumer
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue  # no fetch response for it yet
            pos = consumer.position(tp, timeout_ms=1000)
            if pos is not None and pos > end:
                log.warning("%s[%d]: position %d is beyond the partition's end %d (broker restarted empty?); "
                            "re-reading it from the beginning", tp.topic, tp.partition, pos, end)
                self._rewind.add((tp.topic, tp.partition))
        if self._rewind:
            self.close()

    def _deadletter(self, rec, error: Exception):
        reason = _reason(error)
        log.warning("dead-lettering %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, reason)
        headers = [
            ("reason", reason.encode()),
            ("error", str(error)[:2000].encode()),
            ("source_topic", rec.topic.encode()),
            ("source_partition", str(rec.partition).encode()),
            ("source_offset", str(rec.offset).encode()),
        ]
        return self._producer.send(self.deadletter_topic, key=rec.key, value=rec.value, headers=headers)


def _reason(error: Exception) -> str:
    """A short machine-readable cause; the full message travels in the `error` header."""
    if isinstance(error, UnknownSchemaVersion):
        return "unknown_schema_version"
    if isinstance(error, ValidationError):
        errors = error.errors()
        # pydantic wraps a validator's exception; the original is in ctx["error"].
        if any(isinstance(e.get("ctx", {}).get("error"), UnknownSchemaVersion) for e in errors):
            return "unknown_schema_version"
        if any(e["type"] == "json_invalid" for e in errors):
            return "not_json"
        return "invalid_event"
    if isinstance(error, UnicodeDecodeError):
        return "not_utf8"
    return "invalid_event"
