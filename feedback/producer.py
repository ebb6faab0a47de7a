"""Event producer that never blocks a request and never loses an event.

`emit()` puts the event on a bounded in-memory queue and returns at once. One thread drains
the queue into Kafka (acks=all). When the broker is away, or the queue is full, events are
appended to a spill journal on local disk (fsync'd) and replayed once the broker answers.
Counters say how many were queued, sent, spilled, replayed and dropped.
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


@dataclass
class ProducerCounters:
    queued: int = 0
    sent: int = 0
    spilled: int = 0
    replayed: int = 0
    dropped: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return {k: getattr(self, k) for k in ("queued", "sent", "spilled", "replayed", "dropped")}


class SpillJournal:
    """Append-only JSON-lines file of (topic, key, value) records waiting for the broker."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "spill.jsonl"
        self._lock = threading.Lock()

    def append(self, records: list[tuple[str, bytes, bytes]]) -> None:
        lines = "".join(
            json.dumps({"topic": t, "key": k.decode(), "value": v.decode()}) + "\n" for t, k, v in records
        )
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
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
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():  # a torn last line (crash mid-write) cannot be a whole event
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:
                    log.error("skipping torn line in %s", path)
                    continue
                records.append((d["topic"], d["key"].encode(), d["value"].encode()))
        return path, records

    @staticmethod
    def done(path: Path) -> None:
        path.unlink(missing_ok=True)

    def pending(self) -> bool:
        return (self.path.exists() and self.path.stat().st_size > 0) or any(
            self.path.parent.glob("spill.replaying.*.jsonl")
        )


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
        rec = (topic, event.key, event.to_bytes())
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

    def _send(self, batch: list[tuple[str, bytes, bytes]]) -> list[tuple[str, bytes, bytes]]:
        """Send a batch; return the records that did not make it."""
        if not self._ensure_producer():
            return batch
        futures = []
        failed = []
        for rec in batch:
            try:
                futures.append((rec, self._producer.send(rec[0], key=rec[1], value=rec[2])))
            except Exception:
                failed.append(rec)
        try:
            self._producer.flush(timeout=15)
        except Exception:
            pass
        for rec, fut in futures:
            if not fut.is_done or fut.failed():
                failed.append(rec)
        if failed:
            # Treat the connection as broken: reconnect later rather than pile up retries.
            log.warning("%d events not acknowledged by Kafka; spilling them", len(failed))
            try:
                self._producer.close(timeout=1)
            except Exception:
                pass
            self._producer = None
            self._next_connect = time.monotonic() + 2.0
        return failed

    def _send_or_spill(self, batch: list[tuple[str, bytes, bytes]]) -> None:
        failed = self._send(batch)
        self.counters.add("sent", len(batch) - len(failed))
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
        for i in range(0, len(records), 500):
            chunk = records[i : i + 500]
            failed = self._send(chunk)
            if failed:
                # Keep the file: the rest is replayed next time. Sent ones may be sent again;
                # the collector deduplicates by event_id.
                rest = failed + records[i + 500 :]
                tmp = path.with_suffix(".tmp")
                with open(tmp, "w", encoding="utf-8") as f:
                    for t, k, v in rest:
                        f.write(json.dumps({"topic": t, "key": k.decode(), "value": v.decode()}) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
                self.counters.add("replayed", len(chunk) - len(failed))
                return
            self.counters.add("replayed", len(chunk))
        self.journal.done(path)
        log.info("replayed %d spilled events", len(records))
