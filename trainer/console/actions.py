"""The console's two buttons that change something: promote a version, roll back the live one.

Both publish the same signed tao.control event as `tao models promote|rollback` and the
gateway's /admin routes (feedback/registry.py), so every gateway replica swaps; the worker
learns the new live version when its collector stores that event (model_events). Each
action is logged with the admin's key name.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from feedback import registry
from feedback.store import Store

log = logging.getLogger(__name__)


@dataclass
class ModelActions:
    bootstrap: str
    data_dir: Path
    base_model: Path
    signing_key: bytes
    store: Store

    def live(self) -> str:
        rows = self.store.query("SELECT version FROM model_events ORDER BY occurred_at DESC LIMIT 1")
        live = rows[0][0] if rows else "base"
        # Stored from tao.control as it came: checked before a path is built from it.
        if not registry.VERSION_NAME.fullmatch(live):
            raise ValueError(f"the stored live version {live!r} is not a version name: roll back with `tao models "
                             "rollback --to VERSION`")
        return live

    def promote(self, version: str, by: str) -> str:
        if not registry.VERSION_NAME.fullmatch(version) or version == "base":
            raise ValueError(f"{version!r} is not a version name (v1, v2, ...); to go back to the base model, "
                             "roll back to base")
        event = registry.promote(self.bootstrap, self.data_dir, version, key=self.signing_key)
        log.warning("console: %s promoted %s", by, version)
        return f"Published ModelPromoted {event.payload.version}: every gateway swaps to it within seconds."

    def rollback(self, to: str | None, by: str) -> str:
        if to is not None and not registry.VERSION_NAME.fullmatch(to):
            raise ValueError(f"{to!r} is not a version name: base, v1, v2, ...")
        live = self.live()
        event = registry.rollback(self.bootstrap, self.data_dir, live, to, self.base_model,
                                  f"rolled back from the console by {by}", key=self.signing_key)
        log.warning("console: %s rolled back %s -> %s", by, live, event.payload.version)
        return (f"Published ModelRolledBack {live} -> {event.payload.version}: every gateway swaps to it "
                "within seconds.")
