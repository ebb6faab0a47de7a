"""Kafka client settings shared by every process that talks to the broker."""
from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

# Pinned so that clients never probe the broker for its version: with the broker down,
# kafka-python's probe blocks a constructor for 30 s. 2.5 is spoken by Tansu and Kafka 3-4.
KAFKA_API_VERSION = (2, 5)


def check_bootstrap(value: str) -> str:
    """Validator for TAO_KAFKA_BOOTSTRAP: host:port[,host:port]."""
    for part in value.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"TAO_KAFKA_BOOTSTRAP must be host:port[,host:port], got {value!r}")
    return value


Bootstrap = Annotated[str, AfterValidator(check_bootstrap)]
