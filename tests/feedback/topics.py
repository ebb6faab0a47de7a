"""Reading a topic back in tests: every record of every partition, from the beginning."""
from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition


def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> list:
    """Every record of `topic`, waiting (up to `timeout`) until `expect` have come."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        consumer.assign([TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))])
        out: list = []
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            for recs in consumer.poll(200).values():
                out += recs
        return out
    finally:
        consumer.close()
