"""The DuckDB store: the one process-wide owner of tao-loop's DuckDB file.

DuckDB allows one writer process, so the worker (or `tao collect`) opens the file once
through `Store`, and every thread in it (the collector, the scheduler) uses a connection of
its own: reads never wait, writes take turns. Events and the
Kafka positions they came from are written in one transaction, so after a crash the
collector resumes exactly where the stored rows end. The trainer, another process, never
opens the file: it reads the Parquet snapshot `export_snapshot` writes.

    store = Store(Path("data/tao.duckdb"))
    store.write_batch([(event, raw_json)], {("tao.completions", 0): 1})
    store.export_snapshot(Path("data/snapshots"))  # -> data/snapshots/snapshot-2025...Z
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import duckdb
import pyarrow as pa

from schemas.ddl import ddl
from schemas.events import ChatCompleted, EventEnvelope, FeedbackSubmitted, ModelPromoted, ModelRolledBack

log = logging.getLogger(__name__)

# consumer_offsets travels along: the positions the snapshot's rows reach, for audits.
SNAPSHOT_TABLES = ("completions", "feedback", "model_events", "cycles", "consumer_offsets")

# (event, the record value exactly as consumed from Kafka, decoded as UTF-8)
RawEvent = tuple[EventEnvelope, str]


class Store:
    def __init__(self, path: Path, read_only: bool = False):
        self.path = Path(path)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                raise StoreLocked(
                    f"{self.path} is open in another process (DuckDB allows one writer): a running "
                    f"`tao worker` or `tao collect` holds it; stop that process first") from e
            raise
        if not read_only:
            self._con.execute(ddl())
        # Each thread gets its own DuckDB connection (a cursor of the one database): with
        # MVCC a long read (a snapshot export) never waits for a write and never blocks
        # one. Writers still take turns, so two never conflict on a row.
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()
        self._write_lock = threading.Lock()

    def _cur(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._con.cursor()
            with self._cursors_lock:
                self._cursors.append(cur)
        return cur

    def close(self) -> None:
        with self._write_lock, self._cursors_lock:
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
            self._con.close()

    # -- events ---------------------------------------------------------------------
    def write_batch(self, events: Sequence[RawEvent], positions: dict[tuple[str, int], int]) -> int:
        """Insert new events and move the stored positions, in one transaction.

        `positions` maps (topic, partition) to the next offset to read (last consumed + 1).
        Events whose event_id is already stored are skipped. Returns the rows inserted.
        """
        tables = _rows_by_table(events)
        now = datetime.now(timezone.utc)
        with self._write_lock:
            con = self._cur()
            con.begin()
            try:
                inserted = 0
                for table, rows in tables.items():
                    if not rows:
                        continue
                    con.register("_batch", pa.Table.from_pylist(rows, schema=_ARROW[table]))
                    try:
                        # DuckDB resolves conflicts inside one INSERT oddly (both rows can
                        # be dropped), so the batch was deduplicated in Python first;
                        # ON CONFLICT only meets rows stored by earlier batches. No target:
                        # a reused completion_id / feedback_id is skipped too, instead of
                        # failing the batch and stalling the collector forever.
                        inserted += con.execute(
                            f"INSERT INTO {table} BY NAME SELECT * FROM _batch ON CONFLICT DO NOTHING"
                        ).fetchone()[0]
                    finally:
                        con.unregister("_batch")
                if positions:
                    con.executemany(
                        "INSERT INTO consumer_offsets VALUES (?, ?, ?, ?) ON CONFLICT (topic, partition) "
                        "DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at",
                        [(t, p, off, now) for (t, p), off in positions.items()],
                    )
                con.commit()
            except BaseException:
                con.rollback()
                raise
        return inserted

    def feedback_pending(self) -> int:
        """Feedback stored before its completion arrived (partitions are read independently,
        so it happens): kept as it is, and joined by completion_id once the completion lands."""
        return self.query("SELECT count(*) FROM feedback ANTI JOIN completions USING (completion_id)")[0][0]

    def positions(self) -> dict[tuple[str, int], int]:
        """Next offset to read per (topic, partition), as stored with the rows."""
        rows = self.query("SELECT topic, partition, next_offset FROM consumer_offsets")
        return {(t, p): off for t, p, off in rows}

    # -- snapshots ------------------------------------------------------------------
    def export_snapshot(self, dest_dir: Path) -> Path:
        """Write the tables the trainer reads to Parquet in a new directory under `dest_dir`.

        The files are written under a dot-prefixed temporary name and the directory is
        renamed when complete, so a reader never sees half a snapshot. Returns the directory.
        """
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        # Names sort by time, so "the newest snapshot" is the last name.
        name = "snapshot-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        final = dest_dir / name
        tmp = dest_dir / f".{name}.tmp"
        tmp.mkdir()
        try:
            # One read transaction on this thread's own connection: all tables come from
            # the same moment, and the collector keeps writing meanwhile.
            con = self._cur()
            con.begin()
            try:
                for table in SNAPSHOT_TABLES:
                    _copy_table(con, table, tmp / f"{table}.parquet")
            finally:
                con.rollback()
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    # -- small helpers for other callers (the cycle tables) ---------------------------
    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> None:
        with self._write_lock:
            self._cur().execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[tuple]:
        return self._cur().execute(sql, params).fetchall()


class StoreLocked(RuntimeError):
    """The DuckDB file is held by another process."""


def _copy_table(con: duckdb.DuckDBPyConnection, table: str, target: Path) -> None:
    path = str(target).replace("'", "''")
    con.execute(f"COPY (SELECT * FROM {table}) TO '{path}' (FORMAT parquet)")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _rows_by_table(events: Sequence[RawEvent]) -> dict[str, list[dict[str, Any]]]:
    tables: dict[str, list[dict[str, Any]]] = {"completions": [], "feedback": [], "model_events": []}
    # Unique keys per table, first occurrence wins (a replayed event repeats its event_id).
    seen: dict[str, set[str]] = {"event_id": set(), "completion_id": set(), "feedback_id": set()}

    def first(key: str, value: str) -> bool:
        if value in seen[key]:
            return False
        seen[key].add(value)
        return True

    for ev, raw in events:
        if not first("event_id", ev.event_id):
            continue
        common = {"event_id": ev.event_id, "occurred_at": ev.occurred_at, "raw": raw}
        if isinstance(ev, ChatCompleted):
            p = ev.payload
            if not first("completion_id", p.completion_id):
                continue
            tables["completions"].append({
                **common, "completion_id": p.completion_id, "tenant": ev.tenant,
                "model_version": p.model_version, "task": p.task,
                "messages": _json([m.model_dump(mode="json") for m in p.messages]),
                "params": _json(p.params),
                "response": p.choices[0].text if p.choices else "",
                "choices": _json([c.model_dump(mode="json") for c in p.choices]),
                "prompt_tokens": p.usage.prompt_tokens, "completion_tokens": p.usage.completion_tokens,
                "latency_ms": p.latency_ms, "stream": p.stream,
            })
        elif isinstance(ev, FeedbackSubmitted):
            p = ev.payload
            if not first("feedback_id", p.feedback_id):
                continue
            tables["feedback"].append({
                **common, "feedback_id": p.feedback_id, "completion_id": p.completion_id,
                "tenant": ev.tenant, "kind": p.kind.value, "value": _json(p.value),
                "choice_index": p.choice_index,
            })
        elif isinstance(ev, ModelPromoted):
            p = ev.payload
            tables["model_events"].append({
                **common, "type": ev.type, "version": p.version, "artifact_path": p.artifact_path,
                "swap_mode": p.swap_mode, "parent": p.parent, "cycle_id": p.cycle_id,
                "metrics": _json(p.metrics),
            })
        elif isinstance(ev, ModelRolledBack):
            p = ev.payload
            # The version rolled back from is the parent of the state now live.
            tables["model_events"].append({
                **common, "type": ev.type, "version": p.version, "artifact_path": p.artifact_path,
                "swap_mode": p.swap_mode, "parent": p.rolled_back_from, "cycle_id": None,
                "metrics": None,
            })
        else:
            raise TypeError(f"no table for event type {type(ev).__name__}")
    return tables


# JSON columns travel as strings; DuckDB casts them on insert.
_TS = pa.timestamp("us", tz="UTC")
_ARROW = {
    "completions": pa.schema([
        ("event_id", pa.string()), ("completion_id", pa.string()), ("occurred_at", _TS),
        ("tenant", pa.string()), ("model_version", pa.string()), ("task", pa.string()),
        ("messages", pa.string()), ("params", pa.string()), ("response", pa.string()),
        ("choices", pa.string()), ("prompt_tokens", pa.int32()), ("completion_tokens", pa.int32()),
        ("latency_ms", pa.float64()), ("stream", pa.bool_()), ("raw", pa.string()),
    ]),
    "feedback": pa.schema([
        ("event_id", pa.string()), ("feedback_id", pa.string()), ("completion_id", pa.string()),
        ("occurred_at", _TS), ("tenant", pa.string()), ("kind", pa.string()), ("value", pa.string()),
        ("choice_index", pa.int32()), ("raw", pa.string()),
    ]),
    "model_events": pa.schema([
        ("event_id", pa.string()), ("occurred_at", _TS), ("type", pa.string()), ("version", pa.string()),
        ("artifact_path", pa.string()), ("swap_mode", pa.string()), ("parent", pa.string()),
        ("cycle_id", pa.string()), ("metrics", pa.string()), ("raw", pa.string()),
    ]),
}
