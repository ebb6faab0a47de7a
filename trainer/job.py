"""What the worker hands a cycle process and what it gets back: CYCLE_DIR/job.json in,
CYCLE_DIR/result.json out (and, whole, the cycle's report.json and its row in `cycles`).

Typed at both ends, so a field renamed on one side fails where it is read, not three
stages later as a KeyError in a child process's log.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Status = Literal["promoted", "rejected", "skipped", "failed", "interrupted", "busy"]


class CycleJob(BaseModel):
    cycle_id: str
    since: str | None = Field(description="the watermark: prompts after it are new (None: the first cycle)")
    version: str = Field(description="the name the new version gets (feedback.registry.next_version)")
    parent: str = Field(description="the live version it trains on top of")
    parent_path: str = Field(description="that version's merged weights")
    snapshot: str = Field(description="the Parquet snapshot of the store the cycle reads (never the DuckDB file)")


class CycleResult(BaseModel):
    """How a cycle ended, with the figures of each stage it reached (None: not reached)."""

    cycle_id: str | None = None
    status: Status
    reason: str | None = None
    version: str | None = None
    parent: str | None = None
    watermark: str | None = Field(None, description="where the next cycle's new prompts begin")
    counts: dict[str, int] = Field(default_factory=dict, description="prompts, heldout, candidates, scored, pairs")
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per stage, and total")
    select: dict[str, Any] | None = None
    reward_model: dict[str, Any] | None = None
    function_fit: dict[str, Any] | None = Field(None, description="prompts offering a choice of tools, and how many "
                                                "of them the live model clearly prefers one function on")
    reward: dict[str, float | None] | None = None
    opinions: dict[str, int] | None = Field(None, description="training prompts each reward source had an opinion "
                                            "on (None from all: a prompt no source can judge)")
    train: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    adapter: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (result.json, the report, the worker's HTTP answer): stages not reached
        (fields still at their default: None, or empty) are left out."""
        return self.model_dump(mode="json", exclude_defaults=True)
