"""`tao collect --rebuild`: re-create the DuckDB file from the start of the topics.

The rows are read into a new file beside the old one; the old file is kept as a backup
(`tao.duckdb.before-rebuild-<time>`) and the new one takes its name only when the
collector has read every partition to its end. Tables that do not come from Kafka (the
cycle history) are copied over from the old file when there is one.

Kafka keeps raw events for TAO_EVENT_RETENTION_DAYS; when a partition no longer starts at
offset 0, older events are gone and a rebuild would drop their rows, so it refuses unless
told `allow_partial`.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from feedback.collector import COLLECTED_TOPICS, Collector
from feedback.kafka import KAFKA_API_VERSION
from feedback.settings import CollectorSettings
from feedback.store import Store

log = logging.getLogger(__name__)

# Tables written by the worker, not by the collector: kept across a rebuild.
LOCAL_TABLES = ("cycles", "cycle_candidates", "cycle_pairs")
EVENT_TABLES = ("completions", "feedback", "model_events")


class RebuildRefused(RuntimeError):
    pass


@dataclass
class RebuildResult:
    path: Path
    backup: Path | None
    rows: dict[str, int]
    records: int
    seconds: float


def rebuild(settings: CollectorSettings, *, allow_partial: bool = False, progress=None,
            timeout_s: float = 3600) -> RebuildResult:
    """Rebuild settings.db_path from the topics. `progress(done, total)` is called as it goes."""
    db = settings.db_path
    started = time.monotonic()
    if db.exists():
        Store(db, read_only=True).close()  # raises StoreLocked while a worker holds it
    lost = _records_lost_to_retention(settings.kafka_bootstrap)
    if lost and not allow_partial:
        raise RebuildRefused(
            f"{sum(lost.values())} records are no longer in Kafka ({_fmt(lost)}: older than the topics' retention, "
            f"TAO_EVENT_RETENTION_DAYS={settings.event_retention_days:g}); a rebuild would drop their rows. "
            f"Pass --allow-partial to rebuild anyway.")
    tmp = db.with_name(db.name + ".rebuilding")
    for stale in (tmp, tmp.with_name(tmp.name + ".wal")):
        stale.unlink(missing_ok=True)
    store = Store(tmp)
    try:
        if db.exists():
            _copy_local_tables(store, db)
        collector = Collector(settings.kafka_bootstrap, store, max_poll_records=settings.collector_max_poll_records)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                collector.poll_once(500)
                st = collector.counters.stats()
                ends = [p["end"] for p in st["partitions"]]
                if progress is not None:
                    progress(st["consumed"], None if None in ends else sum(ends) - sum(lost.values()))
                if collector.caught_up():
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"rebuild did not reach the end of the topics in {timeout_s:.0f}s: {st}")
        finally:
            collector.stop()  # its writer thread too
        rows = {t: store.query(f"SELECT count(*) FROM {t}")[0][0] for t in EVENT_TABLES}
        records = collector.counters.as_dict()["consumed"]
        store.execute("CHECKPOINT")
    finally:
        store.close()
    backup = None
    if db.exists():
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        backup = db.with_name(f"{db.name}.before-rebuild-{stamp}")
        db.rename(backup)
        wal = db.with_name(db.name + ".wal")
        if wal.exists():
            wal.rename(backup.with_name(backup.name + ".wal"))
    os.replace(tmp, db)
    return RebuildResult(db, backup, rows, records, time.monotonic() - started)


def _copy_local_tables(store: Store, old: Path) -> None:
    path = str(old).replace("'", "''")
    store.execute(f"ATTACH '{path}' AS old (READ_ONLY)")
    try:
        for table in LOCAL_TABLES:
            store.execute(f"INSERT INTO {table} SELECT * FROM old.{table}")
    finally:
        store.execute("DETACH old")


def _records_lost_to_retention(bootstrap: str) -> dict[tuple[str, int], int]:
    """Partitions whose first offset is past 0: their earlier records were deleted."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             api_version=KAFKA_API_VERSION, request_timeout_ms=15000)
    try:
        tps = [TopicPartition(t, p) for t in COLLECTED_TOPICS for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not tps:
            raise RebuildRefused(f"no tao topics on {bootstrap}: is TAO_KAFKA_BOOTSTRAP right?")
        return {(tp.topic, tp.partition): n for tp, n in consumer.beginning_offsets(tps).items() if n > 0}
    finally:
        consumer.close()


def _fmt(lost: dict[tuple[str, int], int]) -> str:
    return ", ".join(f"{t}[{p}] starts at {n}" for (t, p), n in sorted(lost.items()))
