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

import logging
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import duckdb
import pyarrow as pa

from feedback.cycles import CycleLog
from schemas.ddl import ddl
from schemas.events import EventEnvelope
from schemas.events_fast import FastEvent

log = logging.getLogger(__name__)

# consumer_offsets travels along: the positions the snapshot's rows reach, for audits.
SNAPSHOT_TABLES = ("completions", "feedback", "model_events", "cycles", "consumer_offsets")

# (event, the record value exactly as consumed from Kafka, decoded as UTF-8). The event is
# the pydantic model or its msgspec mirror (the collector's fast path): the same attribute
# names and values (tests/schemas/test_events_fast.py), so rows do not depend on which.
RawEvent = tuple[EventEnvelope | FastEvent, str]

# What write_batch raises when a row itself cannot be stored (a value the Arrow column or
# the DuckDB table refuses), as opposed to DuckDB failing (disk, lock, memory: retry later).
# `unstorable` then finds the rows; everything else in the batch can still go in.
DATA_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, duckdb.ConversionException,
               duckdb.OutOfRangeException, duckdb.InvalidInputException, duckdb.ConstraintException)


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
            _migrate_feedback_key(self._con)
        # Each thread gets its own DuckDB connection (a cursor of the one database): with
        # MVCC a long read (a snapshot export) never waits for a write and never blocks
        # one. Writers still take turns, so two never conflict on a row.
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.cycles = CycleLog(self)  # the cycles tables, in the worker's words

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
    def write_batch(self, events: Sequence[RawEvent], positions: dict[tuple[str, int], int],
                    fingerprints: dict[tuple[str, int], str] | None = None) -> int:
        """Insert new events and move the stored positions, in one transaction.

        `positions` maps (topic, partition) to the next offset to read (last consumed + 1),
        `fingerprints` to a fingerprint of that last consumed record (see the DDL).
        Events whose event_id is already stored are skipped. Returns the rows inserted.
        """
        tables = _tables(events)
        now = datetime.now(timezone.utc)
        offsets = [(t, p, off, now, (fingerprints or {}).get((t, p))) for (t, p), off in positions.items()]
        with self._write_lock:
            try:
                return self._write(tables, offsets, plain=True)
            except duckdb.ConstraintException:
                # Some event (or its completion_id / feedback_id) is stored already: the
                # producer replayed it. Rare, so the costly conflict check runs only then.
                return self._write(tables, offsets, plain=False)

    def unstorable(self, events: Sequence[RawEvent]) -> list[tuple[int, Exception]]:
        """The rows of a batch that cannot be stored, as (index in `events`, error).

        Bisects the batch with trial transactions that are always rolled back, so it writes
        nothing: k bad rows among n cost about 2 k log2(n) trials. Run only after
        write_batch failed with one of DATA_ERRORS (rare: validation lets through only
        values that fit), so its cost is not the collector's steady rate."""
        bad: list[tuple[int, Exception]] = []

        def check(lo: int, hi: int) -> None:
            try:
                with self._write_lock:
                    self._write(_tables(events[lo:hi]), [], plain=False, commit=False)
                return
            except DATA_ERRORS as e:
                if hi - lo == 1:
                    bad.append((lo, e))
                    return
            mid = (lo + hi) // 2
            check(lo, mid)
            check(mid, hi)

        if events:
            check(0, len(events))
        return bad

    def _write(self, tables: dict[str, pa.Table], offsets: list[tuple], plain: bool, commit: bool = True) -> int:
        con = self._cur()
        for table, batch in tables.items():
            con.register(f"_batch_{table}", batch)
        con.begin()
        try:
            inserted = 0
            for table in tables:
                # plain: a bare INSERT, ~5x faster than ON CONFLICT over two unique indexes
                # (measured: 16 vs 86 us a row), which fails on any duplicate. Otherwise
                # ON CONFLICT without a target, so a reused completion_id / feedback_id is
                # skipped too instead of failing the batch (and stalling the collector)
                # forever. Either way the batch itself was deduplicated in Python: DuckDB
                # resolves conflicts inside one INSERT oddly (both rows can be dropped).
                sql = f"INSERT INTO {table} BY NAME {_SELECT[table].format(batch=f'_batch_{table}')}"
                inserted += con.execute(sql if plain else sql + " ON CONFLICT DO NOTHING").fetchone()[0]
            if offsets:
                con.executemany(
                    "INSERT INTO consumer_offsets (topic, partition, next_offset, updated_at, last_record) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (topic, partition) DO UPDATE SET "
                    "next_offset = excluded.next_offset, updated_at = excluded.updated_at, "
                    "last_record = excluded.last_record", offsets)
            if commit:
                con.commit()
            else:
                con.rollback()
        except BaseException:
            con.rollback()
            raise
        finally:
            for table in tables:
                con.unregister(f"_batch_{table}")
        return inserted

    def feedback_pending(self) -> int:
        """Feedback stored before its completion arrived (partitions are read independently,
        so it happens): kept as it is, and joined by completion_id once the completion lands."""
        return self.query("SELECT count(*) FROM feedback ANTI JOIN completions USING (completion_id)")[0][0]

    def positions(self) -> dict[tuple[str, int], int]:
        """Next offset to read per (topic, partition), as stored with the rows."""
        return {key: off for key, (off, _) in self.positions_with_fingerprints().items()}

    def positions_with_fingerprints(self) -> dict[tuple[str, int], tuple[int, str | None]]:
        rows = self.query("SELECT topic, partition, next_offset, last_record FROM consumer_offsets")
        return {(t, p): (off, fp) for t, p, off, fp in rows}

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

    def query_dicts(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column name (the console's queries)."""
        cur = self._cur().execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


class StoreLocked(RuntimeError):
    """The DuckDB file is held by another process."""


def _copy_table(con: duckdb.DuckDBPyConnection, table: str, target: Path) -> None:
    path = str(target).replace("'", "''")
    con.execute(f"COPY (SELECT * FROM {table}) TO '{path}' (FORMAT parquet)")


def _migrate_feedback_key(con: duckdb.DuckDBPyConnection) -> None:
    """Files made before feedback ids were per tenant have feedback_id UNIQUE on its own (and
    DuckDB cannot drop a constraint): rebuild that table under the current DDL, in one
    transaction, keeping every row (all of them satisfy the looser key)."""
    # fetchall, not fetchone: a result left open keeps its transaction open (a CHECKPOINT
    # on this file then fails: "other write transactions active").
    [(old,)] = con.execute("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'feedback' AND "
                           "constraint_type = 'UNIQUE' AND constraint_column_names = ['feedback_id']").fetchall()
    if not old:
        return
    log.info("migrating the feedback table: feedback ids become unique per tenant")
    con.begin()
    try:
        con.execute("ALTER TABLE feedback RENAME TO _feedback_before_tenant_key")
        con.execute(ddl())  # creates feedback anew; the rest of the DDL is idempotent
        con.execute("INSERT INTO feedback BY NAME SELECT * FROM _feedback_before_tenant_key")
        con.execute("DROP TABLE _feedback_before_tenant_key")
        con.commit()
    except BaseException:
        con.rollback()
        raise


def _tables(events: Sequence[RawEvent]) -> dict[str, pa.Table]:
    """Arrow tables of the events, per DuckDB table (raises one of DATA_ERRORS for a value a
    column cannot hold)."""
    return {t: pa.Table.from_pydict(cols, schema=_ARROW[t]) for t, cols in _columns_by_table(events).items()
            if cols["event_id"]}


def _columns_by_table(events: Sequence[RawEvent]) -> dict[str, dict[str, list]]:
    """The events as columns per table (Arrow is built from columns ~2x faster than rows).

    The collector's hot path, so each column's `append` is bound once per batch and called
    directly: 1.1 us an event against 4.1 with a `**values` dict per row (10,500 of the
    collector bench's events, 2-core AVX-512 Xeon; docs/measurements.md). Unique keys per table, first occurrence wins
    (a replayed event repeats its event_id); a feedback id is the client's, unique per tenant."""
    cols = {t: {name: [] for name in schema.names} for t, schema in _ARROW.items()}
    c, f, m = cols["completions"], cols["feedback"], cols["model_events"]
    (c_event, c_completion, c_at, c_tenant, c_version, c_task, c_response, c_prompt, c_answer, c_latency,
     c_stream, c_raw) = (c[n].append for n in (
        "event_id", "completion_id", "occurred_at", "tenant", "model_version", "task", "response",
        "prompt_tokens", "completion_tokens", "latency_ms", "stream", "raw"))
    (f_event, f_feedback, f_completion, f_at, f_tenant, f_kind, f_choice, f_raw) = (f[n].append for n in (
        "event_id", "feedback_id", "completion_id", "occurred_at", "tenant", "kind", "choice_index", "raw"))
    seen_events: set = set()
    seen_completions: set = set()
    seen_feedback: set = set()
    for ev, raw in events:
        event_id = ev.event_id
        if event_id in seen_events:
            continue
        seen_events.add(event_id)
        kind, p = ev.type, ev.payload
        if kind == "ChatCompleted":
            if p.completion_id in seen_completions:
                continue
            seen_completions.add(p.completion_id)
            usage = p.usage
            c_event(event_id), c_completion(p.completion_id), c_at(ev.occurred_at), c_tenant(ev.tenant)
            c_version(p.model_version), c_task(p.task), c_response(p.choices[0].text if p.choices else "")
            c_prompt(usage.prompt_tokens), c_answer(usage.completion_tokens), c_latency(p.latency_ms)
            c_stream(p.stream), c_raw(raw)
        elif kind == "FeedbackSubmitted":
            key = (ev.tenant, p.feedback_id)
            if key in seen_feedback:
                continue
            seen_feedback.add(key)
            f_event(event_id), f_feedback(p.feedback_id), f_completion(p.completion_id), f_at(ev.occurred_at)
            f_tenant(ev.tenant), f_kind(p.kind.value), f_choice(p.choice_index), f_raw(raw)
        elif kind in ("ModelPromoted", "ModelRolledBack"):
            promoted = kind == "ModelPromoted"
            # The version rolled back from is the parent of the state now live.
            row = {"event_id": event_id, "occurred_at": ev.occurred_at, "raw": raw, "type": kind,
                   "version": p.version, "artifact_path": p.artifact_path, "swap_mode": p.swap_mode,
                   "parent": p.parent if promoted else p.rolled_back_from,
                   "cycle_id": p.cycle_id if promoted else None}
            for name, column in m.items():
                column.append(row[name])
        else:
            raise TypeError(f"no table for event type {type(ev).__name__}")
    return cols


# Scalar columns travel as Arrow from the validated event; JSON columns are cut out of the
# raw event by DuckDB (kept as sent, and ~15 us an event less of Python: no dump and
# re-serialise of messages and choices). A completion's three are cut with one
# json_extract over a list of paths, so its raw text is parsed once, not three times
# (7.7 -> 3.8 us an event on 20,000 ~1 KB completions, same values; 2-core AVX-512 Xeon).
_SELECT = {
    "completions": "SELECT * EXCLUDE (_j), _j[1] AS messages, coalesce(_j[2], '{{}}') AS params, _j[3] AS choices "
                   "FROM (SELECT *, json_extract(raw, ['$.payload.messages', '$.payload.params', "
                   "'$.payload.choices']) AS _j FROM {batch})",
    "feedback": "SELECT *, raw->'$.payload.value' AS value FROM {batch}",
    "model_events": "SELECT *, CASE type WHEN 'ModelPromoted' THEN coalesce(raw->'$.payload.metrics', '{{}}') END "
                    "AS metrics FROM {batch}",
}
_TS = pa.timestamp("us", tz="UTC")
_ARROW = {
    "completions": pa.schema([
        ("event_id", pa.string()), ("completion_id", pa.string()), ("occurred_at", _TS),
        ("tenant", pa.string()), ("model_version", pa.string()), ("task", pa.string()),
        ("response", pa.string()), ("prompt_tokens", pa.int32()), ("completion_tokens", pa.int32()),
        ("latency_ms", pa.float64()), ("stream", pa.bool_()), ("raw", pa.string()),
    ]),
    "feedback": pa.schema([
        ("event_id", pa.string()), ("feedback_id", pa.string()), ("completion_id", pa.string()),
        ("occurred_at", _TS), ("tenant", pa.string()), ("kind", pa.string()),
        ("choice_index", pa.int32()), ("raw", pa.string()),
    ]),
    "model_events": pa.schema([
        ("event_id", pa.string()), ("occurred_at", _TS), ("type", pa.string()), ("version", pa.string()),
        ("artifact_path", pa.string()), ("swap_mode", pa.string()), ("parent", pa.string()),
        ("cycle_id", pa.string()), ("raw", pa.string()),
    ]),
}
