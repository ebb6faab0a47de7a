"""The model registry's contract, read by the gateway and written by the worker.

Where versions live (DATA_DIR/models), how a tao.control event is signed, and which version
is live when the control topic has lost its history; the versions on disk (list, get,
next name, metadata.json written last) and the promote / rollback events. The worker
(trainer/cycle.py, trainer/worker.py), `tao models` and the gateway's admin routes publish;
the gateway (serving/control.py) verifies. serving never imports trainer, so what both
need is here.

A version is a directory DATA_DIR/models/VERSION with `weights/` (merged, servable) and
`metadata.json` (schemas.registry.VersionMetadata: parent, cycle id, data counts, reward and
gate figures), written last: a directory without metadata.json is not a version.

Signature: an HMAC-SHA256 over b"tao.control\\0" + the record's value, in the Kafka record
header `tao-sig` (hex). A header rather than an event field: it signs the exact bytes on
the wire (a field would need a canonical form of the rest of the JSON), it needs no schema
change (the collector stores the value as it came, and readers that check nothing are not
broken), and the signature is for the gateway, the only consumer that acts on the event.
The key is the completion-id key the replicas and the worker already share
(feedback/ids.shared_key); the prefix keeps the two uses apart, so no MAC made for one
(ids sign "tenant:random" text) is ever valid for the other.

Live version: after the broker acknowledges an event, the publisher writes it, value and
signature, to DATA_DIR/models/live.json. A gateway starting with an empty tao.control
(retention, a restarted Tansu) serves that version, verified like any control event.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path

from feedback.files import write_json_atomic, write_text_atomic
from schemas.events import TOPICS, ModelPromoted, ModelPromotedPayload, ModelRolledBack, ModelRolledBackPayload
from schemas.registry import VersionMetadata

CONTROL_SIG_HEADER = "tao-sig"
_DOMAIN = b"tao.control\0"
LIVE_FILE = "live.json"


def models_dir(data_dir: Path) -> Path:
    return data_dir / "models"


def control_signature(key: bytes, value: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + value, hashlib.sha256).hexdigest().encode()


def signature_ok(key: bytes, value: bytes, signature: bytes | None) -> bool:
    return signature is not None and hmac.compare_digest(signature, control_signature(key, value))


def write_live(data_dir: Path, value: bytes, signature: bytes) -> None:
    """Record the control event just published as the live one (written whole, fsynced)."""
    write_json_atomic(models_dir(data_dir) / LIVE_FILE, {"event": value.decode(), "signature": signature.decode()},
                      durable=True)


def read_live(data_dir: Path) -> tuple[bytes, bytes] | None:
    """(value, signature) of the last control event published, None if there was none."""
    path = models_dir(data_dir) / LIVE_FILE
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return d["event"].encode(), d["signature"].encode()


def live_version(data_dir: Path) -> str:
    """The version the last control event made live ("base" when there was none)."""
    got = read_live(data_dir)
    return json.loads(got[0])["payload"]["version"] if got else "base"


# -- versions on disk, and the events that make one live --------------------------------
def _read_metadata(path: Path) -> VersionMetadata:
    d = json.loads(path.read_text())
    d.setdefault("version", path.parent.name)
    return VersionMetadata.model_validate(d)


def list_versions(data_dir: Path) -> list[VersionMetadata]:
    """Every complete version, oldest first, from its metadata.json."""
    out = [_read_metadata(meta) for meta in models_dir(data_dir).glob("*/metadata.json")]
    return sorted(out, key=lambda m: _version_number(m.version))


def next_version(data_dir: Path) -> str:
    """v1, v2, ...: one more than any directory there, complete or not (never reuse a name)."""
    numbers = [_version_number(p.name) for p in models_dir(data_dir).glob("v*")]
    return f"v{max(numbers, default=0) + 1}"


def _version_number(name: str) -> int:
    m = re.fullmatch(r"v(\d+)", name)
    return int(m.group(1)) if m else 0


# The names the registry gives (next_version: v1, v2, ...) and "base". Callers that take a
# name from a request check it with this before any path is built from it: "/tmp/x" or
# "../v1" would name a directory outside DATA_DIR/models and publish whatever metadata.json
# it holds (serving/admin.py, the worker's console).
VERSION_NAME = re.compile(r"base|v[0-9]{1,9}")


def get_version(data_dir: Path, version: str) -> VersionMetadata:
    meta = models_dir(data_dir) / version / "metadata.json"
    if not meta.exists():
        known = ", ".join(v.version for v in list_versions(data_dir)) or "none"
        raise LookupError(f"no version {version!r} in {models_dir(data_dir)} (known: {known})")
    return _read_metadata(meta)


def write_metadata(version_dir: Path, metadata: VersionMetadata) -> None:
    """metadata.json appears last and atomically: a directory without it is not a version."""
    write_text_atomic(version_dir / "metadata.json", metadata.model_dump_json(indent=2), durable=True)


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
    return publish_promoted(bootstrap, get_version(data_dir, version).promoted_payload(), key=key, data_dir=data_dir)


def rollback(bootstrap: str, data_dir: Path, live: str, to: str | None, base_model: Path,
             reason: str, *, key: bytes) -> ModelRolledBack:
    """Go back from `live` to `to` (default: live's parent). "base" is the base model."""
    if to is None:
        if live == "base":
            raise LookupError("the base model is live: there is nothing to roll back to")
        to = get_version(data_dir, live).parent or "base"
    meta = (VersionMetadata(version="base", artifact_path=str(base_model)) if to == "base"
            else get_version(data_dir, to))
    event = ModelRolledBack(payload=ModelRolledBackPayload(
        version=to, artifact_path=meta.artifact_path, swap_mode=meta.swap_mode, adapter_path=meta.adapter_path,
        rolled_back_from=live, reason=reason))
    _send(bootstrap, event, key, data_dir)
    return event
