"""The store's record of TAO cycles (tables cycles, cycle_candidates, cycle_pairs) and what a
cycle needs to know from the event tables: where the last one stopped, what model is live.

The worker (trainer/worker.py) is its only writer, through `Store.cycles`; `tao status` and
the worker's HTTP routes read it. The SQL lives here so the worker speaks in cycles, not in
tables.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feedback.store import Store

# What a cycle's directory holds for the store, and the table it goes to.
OUTPUT_TABLES = {"cycle_candidates": "candidates.parquet", "cycle_pairs": "pairs.parquet"}


class CycleLog:
    def __init__(self, store: Store):
        self.store = store

    def mark_interrupted(self) -> int:
        """A cycle still 'running' when the worker starts was cut off by a restart: say so."""
        n = self.store.query("SELECT count(*) FROM cycles WHERE status = 'running'")[0][0]
        self.store.execute("UPDATE cycles SET status = 'interrupted', finished_at = now(), "
                           "reason = 'the worker stopped during this cycle' WHERE status = 'running'")
        return n

    def watermark(self) -> str | None:
        """Where the next cycle's new prompts begin. A rejected cycle used its prompts too; the
        replay sample brings old ones back."""
        rows = self.store.query("SELECT CAST(max(watermark) AS VARCHAR) FROM cycles "
                                "WHERE status IN ('promoted', 'rejected')")
        return rows[0][0] if rows else None

    def new_completions(self, since: str | None) -> int:
        return self.store.query("SELECT count(*) FROM completions "
                                "WHERE ? IS NULL OR occurred_at > CAST(? AS TIMESTAMPTZ)", [since, since])[0][0]

    def live_model(self, data_dir: Path, base_model: Path) -> tuple[str, str]:
        """(version, artifact path) of the model live now: the next cycle trains on top of it."""
        rows = self.store.query("SELECT version, artifact_path FROM model_events ORDER BY occurred_at DESC LIMIT 1")
        if rows:
            return rows[0][0], rows[0][1]
        rows = self.store.query("SELECT version FROM cycles WHERE status = 'promoted' ORDER BY finished_at DESC LIMIT 1")
        if rows:  # promoted, but the collector has not stored the event yet
            return rows[0][0], str((data_dir / "models" / rows[0][0] / "weights").resolve())
        return "base", str(base_model)

    def start(self, cycle_id: str) -> None:
        self.store.execute("INSERT INTO cycles (cycle_id, started_at, status) VALUES (?, now(), 'running')", [cycle_id])

    def finish(self, cycle_id: str, cycle_dir: Path, result: dict[str, Any]) -> None:
        """Record how a cycle ended (its whole result as the report) and load what it wrote."""
        self.store.execute(
            "UPDATE cycles SET finished_at = now(), status = ?, reason = ?, watermark = CAST(? AS TIMESTAMPTZ), "
            "version = ?, report = ? WHERE cycle_id = ?",
            [result["status"], result.get("reason"), result.get("watermark"), result.get("version"),
             json.dumps(result, default=str), cycle_id])
        for table, name in OUTPUT_TABLES.items():
            if (cycle_dir / name).exists():
                self.store.execute(f"INSERT INTO {table} SELECT ? AS cycle_id, * FROM read_parquet(?)",
                                   [cycle_id, str(cycle_dir / name)])

    def recent(self, n: int = 5) -> list[dict]:
        rows = self.store.query("SELECT cycle_id, status, reason, version, CAST(started_at AS VARCHAR) FROM cycles "
                                "ORDER BY started_at DESC LIMIT ?", [n])
        return [dict(zip(("cycle_id", "status", "reason", "version", "started_at"), r)) for r in rows]

    def model_events(self) -> list[dict]:
        rows = self.store.query(
            "SELECT type, version, artifact_path, parent, cycle_id, CAST(occurred_at AS VARCHAR) FROM model_events "
            "ORDER BY occurred_at")
        return [dict(zip(("type", "version", "artifact_path", "parent", "cycle_id", "occurred_at"), r)) for r in rows]

    def row_counts(self) -> dict[str, int]:
        return {t: self.store.query(f"SELECT count(*) FROM {t}")[0][0]
                for t in ("completions", "feedback", "model_events")}
