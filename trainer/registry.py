"""Model registry: version directories on disk, and which one is live.

A version is a directory DATA_DIR/models/VERSION with `weights/` (merged, servable) and
`metadata.json` (parent, cycle id, data counts, reward and gate figures), written last: a
directory without metadata.json is not a version. Which version is live is decided by the
last ModelPromoted / ModelRolledBack event on tao.control (stored by the collector in
DuckDB's model_events). Promote and rollback publish such an event, signed with the key
the gateways share (feedback/registry.py: gateways refuse unsigned ones), and record it as
the live one in DATA_DIR/models/live.json; every gateway swaps.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from feedback.registry import CONTROL_SIG_HEADER, control_signature, models_dir, write_live
from schemas.events import TOPICS, ModelPromoted, ModelPromotedPayload, ModelRolledBack, ModelRolledBackPayload


def list_versions(data_dir: Path) -> list[dict]:
    """Every complete version, oldest first, from its metadata.json."""
    out = []
    for meta in models_dir(data_dir).glob("*/metadata.json"):
        d = json.loads(meta.read_text())
        d.setdefault("version", meta.parent.name)
        out.append(d)
    return sorted(out, key=lambda d: _version_number(d["version"]))


def next_version(data_dir: Path) -> str:
    """v1, v2, ...: one more than any directory there, complete or not (never reuse a name)."""
    numbers = [_version_number(p.name) for p in models_dir(data_dir).glob("v*")]
    return f"v{max(numbers, default=0) + 1}"


def _version_number(name: str) -> int:
    m = re.fullmatch(r"v(\d+)", name)
    return int(m.group(1)) if m else 0


def get_version(data_dir: Path, version: str) -> dict:
    meta = models_dir(data_dir) / version / "metadata.json"
    if not meta.exists():
        known = ", ".join(v["version"] for v in list_versions(data_dir)) or "none"
        raise LookupError(f"no version {version!r} in {models_dir(data_dir)} (known: {known})")
    return json.loads(meta.read_text())


def write_metadata(version_dir: Path, metadata: dict) -> None:
    """metadata.json appears last and atomically: a directory without it is not a version."""
    tmp = version_dir / "metadata.json.tmp"
    tmp.write_text(json.dumps(metadata, indent=2, default=str))
    with open(tmp) as f:
        os.fsync(f.fileno())
    tmp.rename(version_dir / "metadata.json")


def _send(bootstrap: str, event, key: bytes, data_dir: Path) -> None:
    from kafka import KafkaProducer

    from feedback.kafka import KAFKA_API_VERSION

    value = event.to_bytes()
    signature = control_signature(key, value)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", client_id="tao-registry",
                             api_version=KAFKA_API_VERSION, max_block_ms=15000, request_timeout_ms=15000)
    try:
        producer.send(TOPICS["control"], key=event.key, value=value,
                      headers=[(CONTROL_SIG_HEADER, signature)]).get(timeout=30)
    finally:
        producer.close(timeout=5)
    # After the acknowledgement: the file says what the topic says (a gateway that finds the
    # topic empty serves this).
    write_live(data_dir, value, signature)


def publish_promoted(bootstrap: str, payload: ModelPromotedPayload, *, key: bytes, data_dir: Path) -> ModelPromoted:
    """Send ModelPromoted on tao.control, signed with `key` (the gateways' TAO_SIGNING_KEY or
    DATA_DIR/signing.key), and wait for the broker's acknowledgement."""
    event = ModelPromoted(payload=payload)
    _send(bootstrap, event, key, data_dir)
    return event


def promote(bootstrap: str, data_dir: Path, version: str, *, key: bytes) -> ModelPromoted:
    """Make an existing version live (for example one the gate rejected, on a human's word)."""
    meta = get_version(data_dir, version)
    return publish_promoted(bootstrap, ModelPromotedPayload(
        version=version, artifact_path=meta["artifact_path"], swap_mode=meta.get("swap_mode", "weights"),
        adapter_path=meta.get("adapter_path"), parent=meta.get("parent"), cycle_id=meta.get("cycle_id"), metrics={}),
        key=key, data_dir=data_dir)


def rollback(bootstrap: str, data_dir: Path, live: str, to: str | None, base_model: Path,
             reason: str, *, key: bytes) -> ModelRolledBack:
    """Go back from `live` to `to` (default: live's parent). "base" is the base model."""
    if to is None:
        if live == "base":
            raise LookupError("the base model is live: there is nothing to roll back to")
        to = get_version(data_dir, live).get("parent") or "base"
    meta = {"artifact_path": str(base_model)} if to == "base" else get_version(data_dir, to)
    event = ModelRolledBack(payload=ModelRolledBackPayload(
        version=to, artifact_path=meta["artifact_path"], swap_mode=meta.get("swap_mode", "weights"),
        adapter_path=meta.get("adapter_path"), rolled_back_from=live, reason=reason))
    _send(bootstrap, event, key, data_dir)
    return event
