"""Event producer that never blocks a request and never loses an event.

`emit()` puts the event on a bounded in-memory queue and returns at once. One thread drains
the queue into Kafka (acks=all). When the broker is away, or the queue is full, events are
appended to a spill journal on local disk (fsync'd) and replayed once the broker answers.
An event too large for a Kafka record (a ChatCompleted of a 1 MB prompt and its answer can
be) is never sent: it would fail every retry and, as a failed send, stall the producer. It
is set aside in `oversized.jsonl` next to the journal, logged and counted instead.
Counters say how many were queued, sent, spilled, replayed, set aside (oversized), dropped,
and how many torn journal lines (a crash mid-write) were skipped.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from feedback.kafka import KAFKA_API_VERSION
from schemas.events import EventEnvelope

log = logging.getLogger(__name__)

_STOP = object()

# The largest record (key + value) sent: Kafka's default limits (the client's
# max_request_size, the broker's message.max.bytes) are ~1 MiB for a whole batch of one
# record, so this leaves room for the batch and record headers.
MAX_RECORD_BYTES = 1_000_000
COUNTERS = ("queued", "sent", "spilled", "replayed", "oversized", "dropped", "torn")


@dataclass
class ProducerCounters:
    queued: int = 0
    sent: int = 0
    spilled: int = 0
    replayed: int = 0
    oversized: int = 0   # too large for Kafka: set aside in oversized.jsonl, not sent
    dropped: int = 0
    torn: int = 0        # torn journal lines (a crash mid-write) skipped on replay
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return {k: getattr(self, k) for k in COUNTERS}


class SpillJournal:
    """Append-only JSON-lines file of (topic, key, value) records waiting for the broker."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "spill.jsonl"
        self.oversized_path = directory / "oversized.jsonl"
        self.torn = 0  # torn lines skipped by take(), all time
        self._lock = threading.Lock()

    def append(self, records: list[tuple[str, bytes, bytes]]) -> None:
        self._append(self.path, records)

    def set_aside(self, records: list[tuple[str, bytes, bytes]]) -> None:
        """Keep records Kafka cannot take (too large) where an operator finds them."""
        self._append(self.oversized_path, records)

    def _append(self, path: Path, records: list[tuple[str, bytes, bytes]]) -> None:
        lines = "".join(_line(t, k, v) for t, k, v in records).encode()
        with self._lock, open(path, "ab+") as f:
            # A crash mid-write leaves a torn last line: without a newline first, this append
            # would continue it, and the two (the torn one and the first new one) be lost.
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    lines = b"\n" + lines
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())  # the request already succeeded: the event must survive a crash

    def take(self) -> tuple[Path, list[tuple[str, bytes, bytes]]] | None:
        """Move the journal aside and return its records; `done(path)` deletes it after replay."""
        with self._lock:
            pending = sorted(self.path.parent.glob("spill.replaying.*.jsonl"))
            if not pending:
                if not self.path.exists() or self.path.stat().st_size == 0:
                    return None
                target = self.path.with_name(f"spill.replaying.{time.time_ns()}.jsonl")
                self.path.rename(target)
                pending = [target]
        path = pending[0]
        records = []
        # Split on b"\n" only (lines are ASCII JSON): a torn line is any prefix of one.
        for n, line in enumerate(path.read_bytes().split(b"\n"), start=1):
            if not line.strip():
                continue
            try:  # a torn line (crash mid-write) cannot be a whole event
                d = json.loads(line)
                records.append((d["topic"], d["key"].encode(), d["value"].encode()))
            except (ValueError, KeyError, TypeError, AttributeError):
                self.torn += 1
                log.error("skipping torn line %d of %s (%d bytes: a crash while it was written): %r", n, path,
                          len(line), line[:120])
        return path, records

    @staticmethod
    def done(path: Path) -> None:
        path.unlink(missing_ok=True)

    def pending(self) -> bool:
        return (self.path.exists() and self.path.stat().st_size > 0) or any(
            self.path.parent.glob("spill.replaying.*.jsonl")
        )


def _line(topic: str, key: bytes, value: bytes) -> str:
    return json.dumps({"topic": topic, "key": key.decode(), "value": value.decode()}) + "\n"


class EventProducer:
    def __init__(self, bootstrap: str, spill_dir: Path, queue_size: int = 10_000, client_id: str = "tao"):
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.journal = SpillJournal(spill_dir)
        self.counters = ProducerCounters()
        self._q: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="tao-producer", daemon=True)
        self._producer = None
        self._next_connect = 0.0
        self._closing = False

    # -- API used by request handlers -------------------------------------------------
    def start(self) -> "EventProducer":
        self._thread.start()
        return self

    def emit(self, topic: str, event: EventEnvelope) -> None:
        """Never blocks: queue it, or spill it to disk if the queue is full."""
        try:
            rec = (topic, event.key, event.to_bytes())
        except Exception:  # never the request's failure: e.g. a lone surrogate in a message
            log.exception("event %s cannot be serialised: dropped", event.event_id)
            self.counters.add("dropped")
            return
        try:
            self._q.put_nowait(rec)
            self.counters.add("queued")
        except queue.Full:
            try:
                self.journal.append([rec])
                self.counters.add("spilled")
            except OSError:
                log.exception("spill journal unwritable: event %s dropped", event.event_id)
                self.counters.add("dropped")

    def close(self, timeout: float = 15.0) -> None:
        """Drain the queue (to Kafka or the journal) and stop the thread."""
        self._closing = True  # from now on, no new connection attempts: spill what is left
        if self._thread.is_alive():
            self._q.put(_STOP)
            self._thread.join(timeout)
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception:
                pass

    @property
    def connected(self) -> bool:
        return self._producer is not None

    # -- the producer thread ----------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = []
            try:
                item = self._q.get(timeout=0.5)
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)
                while len(batch) < 500 and not stopping:
                    item = self._q.get_nowait()
                    if item is _STOP:
                        stopping = True
                    else:
                        batch.append(item)
            except queue.Empty:
                pass
            if batch:
                self._send_or_spill(batch)
            if self.journal.pending() and self._ensure_producer():
                self._replay()

    def _ensure_producer(self) -> bool:
        if self._producer is not None:
            return True
        if time.monotonic() < self._next_connect or self._closing:
            return False
        from kafka import KafkaProducer

        try:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap, client_id=self.client_id, acks="all", api_version=KAFKA_API_VERSION,
                linger_ms=5, max_block_ms=5000, request_timeout_ms=10000, retries=3,
                enable_idempotence=True,  # a retried batch is not written twice
            )
            log.info("connected to Kafka at %s", self.bootstrap)
            return True
        except Exception as e:
            log.warning("Kafka at %s unreachable (%s); spilling events to %s", self.bootstrap, e, self.journal.path)
            self._next_connect = time.monotonic() + 2.0
            return False

    def _send(self, batch: list[tuple[str, bytes, bytes]]) -> tuple[list[tuple[str, bytes, bytes]], int]:
        """Send a batch; return the records that did not make it, and how many were set aside
        as too large (those are neither sent nor to be retried)."""
        big = [rec for rec in batch if len(rec[1]) + len(rec[2]) > MAX_RECORD_BYTES]
        if big:
            batch = [rec for rec in batch if len(rec[1]) + len(rec[2]) <= MAX_RECORD_BYTES]
        if not self._ensure_producer():
            return batch, self._set_aside(big)
        from kafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

        futures = []
        failed = []
        for rec in batch:
            try:
                futures.append((rec, self._producer.send(rec[0], key=rec[1], value=rec[2])))
            except MessageSizeTooLargeError:
                big.append(rec)
            except Exception:
                failed.append(rec)
        try:
            self._producer.flush(timeout=15)
        except Exception:
            pass
        for rec, fut in futures:
            if fut.is_done and fut.failed() and isinstance(fut.exception, (MessageSizeTooLargeError,
                                                                           RecordListTooLargeError)):
                big.append(rec)  # the broker's limit is lower than ours: retrying cannot help
            elif not fut.is_done or fut.failed():
                failed.append(rec)
        aside = self._set_aside(big)
        if failed:
            # Treat the connection as broken: reconnect later rather than pile up retries.
            log.warning("%d events not acknowledged by Kafka; spilling them", len(failed))
            try:
                self._producer.close(timeout=1)
            except Exception:
                pass
            self._producer = None
            self._next_connect = time.monotonic() + 2.0
        return failed, aside

    def _set_aside(self, records: list[tuple[str, bytes, bytes]]) -> int:
        if not records:
            return 0
        for t, _, v in records:
            log.error("an event of %d bytes for %s is larger than a Kafka record may be (%d bytes): not sent, "
                      "kept in %s", len(v), t, MAX_RECORD_BYTES, self.journal.oversized_path)
        try:
            self.journal.set_aside(records)
            self.counters.add("oversized", len(records))
        except OSError:
            log.exception("%s unwritable: %d oversized events dropped", self.journal.oversized_path, len(records))
            self.counters.add("dropped", len(records))
        return len(records)

    def _send_or_spill(self, batch: list[tuple[str, bytes, bytes]]) -> None:
        failed, aside = self._send(batch)
        self.counters.add("sent", len(batch) - len(failed) - aside)
        if failed:
            try:
                self.journal.append(failed)
                self.counters.add("spilled", len(failed))
            except OSError:
                log.exception("spill journal unwritable: %d events dropped", len(failed))
                self.counters.add("dropped", len(failed))

    def _replay(self) -> None:
        taken = self.journal.take()
        if taken is None:
            return
        path, records = taken
        torn, self.journal.torn = self.journal.torn, 0
        self.counters.add("torn", torn)
        for i in range(0, len(records), 500):
            chunk = records[i : i + 500]
            failed, aside = self._send(chunk)
            if failed:
                # Keep the file: the rest is replayed next time. Sent ones may be sent again;
                # the collector deduplicates by event_id.
                rest = failed + records[i + 500 :]
                tmp = path.with_suffix(".tmp")
                with open(tmp, "w", encoding="utf-8") as f:
                    for t, k, v in rest:
                        f.write(_line(t, k, v))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
                self.counters.add("replayed", len(chunk) - len(failed) - aside)
                return
            self.counters.add("replayed", len(chunk) - aside)
        self.journal.done(path)
        log.info("replayed %d spilled events", len(records))
