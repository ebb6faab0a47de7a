"""The collector: copies events from Kafka into DuckDB, exactly once.

Reads every partition of tao.completions, tao.feedback and tao.control, validates each
record with `schemas.events_fast.parse_event_fast` (pydantic's verdict, msgspec's speed),
and writes the rows together with the next offset per partition in one DuckDB transaction
(`Store.write_batch`), on a writer thread of its own (feedback/writer.py): the next batch is
fetched and validated while the last one is written. On start (and every
30 s, its stand-in for a rebalance) it seeks to the positions stored in DuckDB, so a crash
anywhere loses nothing and duplicates nothing; it re-reads the last stored record of each
partition to check the broker still has the same log (a restarted Tansu does not), and
events are also deduplicated by `event_id` (the producer's spill replay may resend some).
Records it cannot parse go to the dead-letter topic with a `reason` header; the position
moves past them. So do valid ones that DuckDB cannot hold (reason "unstorable": a value
validation let through but a column refuses): the rest of their batch is stored, and one
such record never stalls the collector.

It runs as a thread of the worker process (`Collector(...).start()`), next to the scheduler.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from pydantic import ValidationError

from feedback.kafka import KAFKA_API_VERSION
from feedback.store import DATA_ERRORS, RawEvent, Store
from feedback.writer import BatchWriter
from schemas.events import TOPICS, UnknownSchemaVersion
from schemas.events_fast import parse_event_fast

log = logging.getLogger(__name__)

COLLECTED_TOPICS = (TOPICS["completions"], TOPICS["feedback"], TOPICS["control"])


# How often the collector reconnects (a few milliseconds): a partition added to a topic is
# picked up within this time, and a broker that lost its log (see `_verified`) noticed.
RECHECK_S = 30.0


@dataclass
class PartitionState:
    position: int           # next offset to read, as stored in DuckDB with the rows
    end: int | None = None  # the partition's high watermark at the last fetch (None: unknown yet)

    @property
    def lag(self) -> int | None:
        return None if self.end is None else max(self.end - self.position, 0)


@dataclass
class Batch:
    """One poll's records, validated, on its way to the writer thread."""
    n: int                                        # records read, good or bad
    good: list[RawEvent]
    records: list                                 # the Kafka record of each good event (to dead-letter it)
    positions: dict[tuple[str, int], int]         # next offset per partition, stored with the rows
    fingerprints: dict[tuple[str, int], str]
    reasons: list[str]                            # dead-letter reasons so far (more if a row is unstorable)
    producer: object                              # the dead-letter producer of the connection that read it

    def __len__(self) -> int:
        return self.n

    def merge(self, later: "Batch") -> "Batch":
        """This batch followed by a later one of the same connection, as one (in place: the
        writer owns a batch once handed over). Later positions are further on."""
        self.n += later.n
        self.good += later.good
        self.records += later.records
        self.positions.update(later.positions)
        self.fingerprints.update(later.fingerprints)
        self.reasons += later.reasons
        return self


@dataclass
class CollectorCounters:
    consumed: int = 0       # records read from Kafka, good or bad
    stored: int = 0         # rows inserted into DuckDB
    duplicates: int = 0     # valid events whose event_id was already stored
    deadlettered: int = 0   # records sent to the dead-letter topic
    deadlettered_by_reason: dict[str, int] = field(default_factory=dict)
    partitions: dict[tuple[str, int], PartitionState] = field(default_factory=dict)
    last_commit: float | None = None  # time.time() of the last DuckDB transaction
    # (monotonic time, rows stored) of recent batches, for a rows-per-second figure
    recent: deque = field(default_factory=lambda: deque(maxlen=256), repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return {k: getattr(self, k) for k in ("consumed", "stored", "duplicates", "deadlettered")}

    def record_batch(self, consumed: int, stored: int, duplicates: int, reasons: list[str],
                     positions: dict[tuple[str, int], int], ends: dict[tuple[str, int], int | None]) -> None:
        """One poll: its counts, the dead-letter reasons, the positions committed with it
        (empty when nothing was read, so no transaction ran) and each partition's end."""
        now = time.monotonic()
        with self.lock:
            self.consumed += consumed
            self.stored += stored
            self.duplicates += duplicates
            self.deadlettered += len(reasons)
            for r in reasons:
                self.deadlettered_by_reason[r] = self.deadlettered_by_reason.get(r, 0) + 1
            if consumed:
                self.last_commit = time.time()
                self.recent.append((now, stored))
            self._set_positions(positions)
            for key, end in ends.items():
                if end is not None and key in self.partitions:
                    self.partitions[key].end = end

    def resumed_at(self, positions: dict[tuple[str, int], int]) -> None:
        """The positions read from DuckDB when the collector (re)connects."""
        with self.lock:
            self._set_positions(positions)

    def _set_positions(self, positions: dict[tuple[str, int], int]) -> None:
        for key, pos in positions.items():
            self.partitions.setdefault(key, PartitionState(pos)).position = pos

    def rows_per_second(self, window_s: float = 10.0) -> float:
        """Rows stored per second over the last `window_s` seconds."""
        now = time.monotonic()
        with self.lock:
            return sum(n for t, n in self.recent if now - t <= window_s) / window_s

    def stats(self) -> dict:
        """Everything `tao status` and /metrics show about the collector."""
        rate = self.rows_per_second()
        with self.lock:
            parts = [{"topic": t, "partition": p, "position": st.position, "end": st.end, "lag": st.lag}
                     for (t, p), st in sorted(self.partitions.items())]
            known = [x["lag"] for x in parts if x["lag"] is not None]
            return {
                **{k: getattr(self, k) for k in ("consumed", "stored", "duplicates", "deadlettered")},
                "deadlettered_by_reason": dict(self.deadlettered_by_reason),
                "rows_per_second": round(rate, 1),
                "lag": sum(known) if known else None,
                "last_commit": self.last_commit,
                "partitions": parts,
            }


class Collector:
    def __init__(
        self,
        bootstrap: str,
        store: Store,
        topics: tuple[str, ...] = COLLECTED_TOPICS,
        deadletter_topic: str = TOPICS["deadletter"],
        max_poll_records: int = 2000,
        recheck_s: float = RECHECK_S,
    ):
        self.bootstrap = bootstrap
        self.store = store
        self.topics = tuple(topics)
        self.deadletter_topic = deadletter_topic
        self.max_poll_records = max_poll_records
        self.recheck_s = recheck_s
        self.counters = CollectorCounters()
        self._consumer = None
        self._connected_at = 0.0
        self._producer = None
        self._thread: threading.Thread | None = None
        # Partitions found beyond their end: the next connect reads them from the start.
        self._rewind: set[tuple[str, int]] = set()
        # Partitions whose last stored record is read again after a connect, to check that
        # the broker still has the same log: (topic, partition) -> (offset, fingerprint).
        self._verify: dict[tuple[str, int], tuple[int, str]] = {}
        # The partitions of the last connect, and whether this one is the periodic recheck:
        # a recheck that finds the same partitions logs at DEBUG (at INFO it was 2,880 lines a
        # day saying nothing new); a first connect, a change or a reconnect after an error at INFO.
        self._layout: tuple[tuple[str, int], ...] | None = None
        self._rechecking = False
        self._stop = threading.Event()
        # Fetch and validation (this thread) overlap the DuckDB transaction (the writer's);
        # what is read meanwhile waits, merged into one batch of at most max_poll_records.
        self._writer: BatchWriter[Batch] = BatchWriter(self._write, limit=max_poll_records)

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
        self._writer.stop()

    def close(self) -> None:
        """Write what was read, then drop the Kafka clients; the next poll_once reconnects and
        seeks to stored positions."""
        # The writer first: the positions read on the next connect must include every queued
        # batch, and an unstorable row still needs the producer to be dead-lettered.
        error = self._writer.wait()
        if error is not None:
            log.warning("collector: a queued batch was not stored (%s: %s); it will be read again",
                        type(error).__name__, error)
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
                    self._rechecking = False  # the connect after an error is said at INFO
                    log.warning("collector: %s: %s; reconnecting to Kafka at %s in %.1fs",
                                type(e).__name__, e, self.bootstrap, backoff)
                    self.close()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            self.close()

    # -- one batch ------------------------------------------------------------------
    def poll_once(self, timeout_ms: int = 500) -> int:
        """Read one batch, dead-letter what does not parse, and hand the rest to the writer
        thread (waiting while it is a full batch behind). Returns records read; `drain` waits
        until they are stored."""
        if self._consumer is not None and time.monotonic() - self._connected_at > self.recheck_s:
            # There is no consumer group to rebalance (joining one takes ~23 s on Tansu, and
            # only DuckDB's positions count anyway): reconnecting is the collector's
            # rebalance. It also re-reads and checks the last stored record of each partition.
            self.close()
            self._rechecking = True
        if self._consumer is None:
            self._connect()
        consumer = self._consumer
        batches = consumer.poll(timeout_ms=timeout_ms, max_records=self.max_poll_records)
        good: list[RawEvent] = []
        good_records = []  # the Kafka record of each good event, to dead-letter it if unstorable
        positions: dict[tuple[str, int], int] = {}
        fingerprints: dict[tuple[str, int], str] = {}
        deadletters = []
        reasons: list[str] = []
        n = 0
        for tp, records in batches.items():
            records = self._verified(tp, records)
            for rec in records:
                n += 1
                try:
                    if rec.value is None:
                        raise ValueError("record has no value")
                    raw = rec.value.decode("utf-8")
                    good.append((parse_event_fast(raw), raw))
                    good_records.append(rec)
                except (ValidationError, UnknownSchemaVersion, ValueError) as e:
                    reasons.append(_reason(e))
                    deadletters.append(self._deadletter(rec, e, reasons[-1]))
            if records:
                positions[(tp.topic, tp.partition)] = records[-1].offset + 1
                fingerprints[(tp.topic, tp.partition)] = fingerprint(records[-1].value)
        if deadletters:
            # Acknowledged before the position moves past them: a bad record is never lost.
            self._producer.flush(timeout=10)
            for fut in deadletters:
                fut.get(timeout=0)  # raises if the broker refused it
        ends = {tp: consumer.highwater(tp) for tp in consumer.assignment()}
        # The partitions' ends now, their positions once stored: lag counts what is not stored yet.
        self.counters.record_batch(0, 0, 0, [], {}, {(tp.topic, tp.partition): end for tp, end in ends.items()})
        if n:
            self._writer.put(Batch(n, good, good_records, positions, fingerprints, reasons, self._producer))
        self._reset_positions_past_end(ends)
        return n

    def drain(self) -> None:
        """Wait until every batch read so far is stored (raises if a write failed)."""
        self._writer.drain()

    def _write(self, batch: Batch) -> None:
        """The writer thread's work: one batch into DuckDB, then the counters."""
        inserted, kept = self._store(batch)
        self.counters.record_batch(batch.n, inserted, kept - inserted, batch.reasons, batch.positions, {})

    def _store(self, batch: Batch) -> tuple[int, int]:
        """Write the batch; if a row of it cannot be stored, dead-letter that row and write the
        rest with the same positions. Returns (rows inserted, events written or deduplicated).

        Without this, a row that fails the batch fails it on every retry: the collector
        reconnected, re-read it and failed again, and stored nothing after it (issue 13)."""
        good = batch.good
        try:
            return self.store.write_batch(good, batch.positions, batch.fingerprints), len(good)
        except DATA_ERRORS:
            bad = self.store.unstorable(good)
            if not bad:
                raise  # no row fails alone: not the data's fault; reconnect and retry as usual
        futures = []
        for i, error in bad:
            batch.reasons.append("unstorable")
            futures.append(self._deadletter(batch.records[i], error, "unstorable", batch.producer))
        batch.producer.flush(timeout=10)
        for fut in futures:  # acknowledged before the position moves past them, as above
            fut.get(timeout=0)
        dropped = {i for i, _ in bad}
        rest = [ev for i, ev in enumerate(good) if i not in dropped]
        return self.store.write_batch(rest, batch.positions, batch.fingerprints), len(rest)

    def _verified(self, tp, records: list) -> list:
        """The records of a partition, less the already stored one read back after a connect.

        That record must be the one stored (same fingerprint); if another record sits at
        its offset, the broker lost its log and numbered new records from 0 again (a
        restarted Tansu): offsets alone cannot tell, so the partition is re-read from the
        start (event_id dedup keeps that exact)."""
        key = (tp.topic, tp.partition)
        if key not in self._verify or not records:
            return records
        offset, expected = self._verify.pop(key)
        first = records[0]
        if first.offset != offset:
            return records  # retention deleted it: nothing to compare with
        if fingerprint(first.value) == expected:
            return records[1:]
        log.warning("%s[%d]@%d is not the record stored from there (the broker lost its log?); "
                    "re-reading the partition from the beginning", tp.topic, tp.partition, offset)
        self._rewind.add(key)
        return []

    def caught_up(self) -> bool:
        """True when every partition has been fetched at least once and read to its end."""
        consumer = self._consumer
        if consumer is None:
            return False
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None or consumer.position(tp, timeout_ms=1000) < end:
                return False
        return True

    # -- internals ------------------------------------------------------------------
    def _connect(self) -> None:
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        # No consumer group: joining one takes ~23 s on Tansu, and the positions that
        # count are the ones stored in DuckDB with the rows, not committed offsets.
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap, client_id="tao-collector", group_id=None,
            enable_auto_commit=False, auto_offset_reset="earliest", api_version=KAFKA_API_VERSION,
            reconnect_backoff_max_ms=2000, request_timeout_ms=15000,
            # Large fetches: the collector's rate is bounded by how fast it decodes records.
            max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
            # A caught-up fetch waits at the broker at most this long. Tansu answers when the wait
            # ends rather than when records arrive: with the default 500 ms, and the writer
            # thread letting this one poll again at once, freshness at 1,000 events/s was p50
            # 150 ms; at 50 ms it was 40 ms (issue 18). Idle, it costs 20 empty fetches a second.
            fetch_max_wait_ms=50,
        )
        try:
            tps = []
            for topic in self.topics:
                parts = consumer.partitions_for_topic(topic)
                if not parts:
                    raise RuntimeError(f"topic {topic} does not exist on {self.bootstrap} (tao up creates it)")
                tps += [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            stored = self.store.positions_with_fingerprints()
            self._verify.clear()
            resumed = 0
            resumed_records = 0
            for tp in tps:
                key = (tp.topic, tp.partition)
                pos, fp = stored.get(key, (None, None))
                if pos is None or key in self._rewind:
                    # Offset 0, not seek_to_beginning(): that asks the broker with
                    # ListOffsets, and a Tansu restarted under the consumer was seen to
                    # leave those partitions waiting for an answer forever. Where
                    # retention deleted the start, the fetch gets OffsetOutOfRange and
                    # auto_offset_reset="earliest" moves on to the first record left.
                    consumer.seek(tp, 0)
                else:
                    if fp is not None and pos > 0:  # read the last stored record again: _verified
                        self._verify[key] = (pos - 1, fp)
                    consumer.seek(tp, pos - 1 if key in self._verify else pos)
                    resumed += 1
                    resumed_records += pos
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
        self._connected_at = time.monotonic()
        self.counters.resumed_at({(tp.topic, tp.partition): stored.get((tp.topic, tp.partition), (0,))[0]
                                  for tp in tps})
        layout = tuple((tp.topic, tp.partition) for tp in tps)
        level = logging.DEBUG if self._rechecking and layout == self._layout else logging.INFO
        self._layout, self._rechecking = layout, False
        log.log(level, "collector reading %d partitions of %s from %s (%d resumed from DuckDB at %d records, "
                "%d from the beginning)", len(tps), ", ".join(self.topics), self.bootstrap, resumed,
                resumed_records, len(tps) - resumed)

    def _reset_positions_past_end(self, ends: dict) -> None:
        """Re-read from the beginning any partition whose end is behind our position.

        Tansu keeps data in memory, so a restarted broker starts every partition at 0 again
        while DuckDB (and this consumer) still point further on; Tansu answers such fetches
        with no records and no error, so without this the collector would wait silently
        until the partition grew past the old position. Re-reading is safe: event_id dedup.
        The end is the high watermark of the last fetch response: Tansu's ListOffsets
        (`end_offsets`) answers base offset of the last batch + 1, too low to compare with.
        The clients are rebuilt rather than seeking in place: a consumer that lived through
        the broker restart (its topics recreated under new ids) was seen to fetch nothing
        more after seek_to_beginning. A restarted log that already reached the old position
        is caught by `_verified` instead.
        """
        consumer = self._consumer
        for tp, end in ends.items():
            if end is None:
                continue  # no fetch response for it yet
            pos = consumer.position(tp, timeout_ms=1000)
            # A record still to be re-read for `_verified` must lie below the end: at the end
            # itself it is gone, whatever came after it.
            verify = self._verify.get((tp.topic, tp.partition))
            if (pos is not None and pos > end) or (verify is not None and end <= verify[0]):
                log.warning("%s[%d]: position %d is beyond the partition's end %d (broker restarted empty?); "
                            "re-reading it from the beginning", tp.topic, tp.partition,
                            pos if verify is None else verify[0] + 1, end)
                self._rewind.add((tp.topic, tp.partition))
        if self._rewind:
            self.close()

    def _deadletter(self, rec, error: Exception, reason: str, producer=None):
        log.warning("dead-lettering %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, reason)
        headers = [
            ("reason", reason.encode()),
            ("error", str(error)[:2000].encode()),
            ("source_topic", rec.topic.encode()),
            ("source_partition", str(rec.partition).encode()),
            ("source_offset", str(rec.offset).encode()),
        ]
        return (producer or self._producer).send(self.deadletter_topic, key=rec.key, value=rec.value, headers=headers)


def fingerprint(value: bytes | None) -> str:
    """A short hash of a record's value, to recognise it when read again."""
    return hashlib.blake2b(value or b"", digest_size=8).hexdigest()


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
        if any(e["type"] in ("missing", "union_tag_not_found") for e in errors):
            return "missing_field"
        return "invalid_event"
    if isinstance(error, UnicodeDecodeError):
        return "not_utf8"
    return "invalid_event"
