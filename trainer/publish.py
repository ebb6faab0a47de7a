"""Publish a model version: its directory (metadata written last) and a ModelPromoted event."""
from __future__ import annotations

import json
import os
from pathlib import Path

from feedback.kafka import KAFKA_API_VERSION
from schemas.events import TOPICS, ModelPromoted, ModelPromotedPayload


def write_metadata(version_dir: Path, metadata: dict) -> None:
    """metadata.json appears last and atomically: a directory without it is not a version."""
    tmp = version_dir / "metadata.json.tmp"
    tmp.write_text(json.dumps(metadata, indent=2, default=str))
    with open(tmp) as f:
        os.fsync(f.fileno())
    tmp.rename(version_dir / "metadata.json")


def publish_promoted(bootstrap: str, payload: ModelPromotedPayload) -> ModelPromoted:
    """Send ModelPromoted on tao.control and wait for the broker's acknowledgement."""
    from kafka import KafkaProducer

    event = ModelPromoted(payload=payload)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", client_id="tao-trainer", api_version=KAFKA_API_VERSION,
                             max_block_ms=15000, request_timeout_ms=15000)
    try:
        producer.send(TOPICS["control"], key=event.key, value=event.to_bytes()).get(timeout=30)
    finally:
        producer.close(timeout=5)
    return event
