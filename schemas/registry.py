"""A model version's metadata.json: what the worker writes and the gateway, `tao models` and
the admin routes read (feedback/registry.py keeps the files; this is their shape).

Extra keys are kept, not refused: a version written by a newer worker (more figures in its
report) must still list and promote with an older gateway, and `tao models show` prints
what is there.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import ModelPromotedPayload


class VersionMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: str
    artifact_path: str = Field(description="directory with merged weights (config.json, *.safetensors)")
    swap_mode: Literal["weights", "lora"] = "weights"
    adapter_path: str | None = Field(None, description="LoRA adapter against the base model (lora swap mode)")
    parent: str | None = Field(None, description="the version it was trained on top of (base: the base model)")
    cycle_id: str | None = None
    status: Literal["promoted", "rejected"] = Field(
        "promoted", description="the gate's verdict when it was made (a rejected version can still be promoted "
        "by hand: `tao models promote`)")
    metrics: dict[str, float] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict, description="prompts, held-out, candidates, pairs")
    reward: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per cycle stage")

    def promoted_payload(self) -> ModelPromotedPayload:
        """The ModelPromoted payload that makes this version live."""
        return ModelPromotedPayload(version=self.version, artifact_path=self.artifact_path, swap_mode=self.swap_mode,
                                    adapter_path=self.adapter_path, parent=self.parent, cycle_id=self.cycle_id,
                                    metrics=self.metrics)
