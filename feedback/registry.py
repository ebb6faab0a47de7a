"""The model registry's contract, read by the gateway and written by the worker.

Where versions live (DATA_DIR/models), how a tao.control event is signed, and which version
is live when the control topic has lost its history. trainer/registry.py publishes; the
gateway (serving/control.py) verifies. serving never imports trainer, so what both need
is here.

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
import os
from pathlib import Path

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
    """Record the control event just published as the live one (temporary name, then rename)."""
    path = models_dir(data_dir) / LIVE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{LIVE_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps({"event": value.decode(), "signature": signature.decode()}))
    with open(tmp) as f:
        os.fsync(f.fileno())
    tmp.replace(path)


def read_live(data_dir: Path) -> tuple[bytes, bytes] | None:
    """(value, signature) of the last control event published, None if there was none."""
    path = models_dir(data_dir) / LIVE_FILE
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return d["event"].encode(), d["signature"].encode()
