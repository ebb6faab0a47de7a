"""Consumes tao.control and hands ModelPromoted / ModelRolledBack to the gateway's swapper.

No consumer group: every gateway replica reads the whole topic from the start (each must
apply every swap), and a new replica catches up to the latest promoted version. Of a
batch of history only the last event is applied: intermediate versions are never served.

Anything that can write the topic could otherwise make every gateway load any path, so an
event is applied only if it carries a valid signature (feedback/registry.py: HMAC with the
replicas' shared key, in the `tao-sig` record header) and names artifacts inside
DATA_DIR/models (resolved: a symlink out of it is refused too). Refusals are logged and
counted (tao_control_refused_total{reason}). A gateway whose topic has lost its history
starts on the live version the registry recorded (`registry_live`), checked the same way.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Awaitable, Callable

from feedback.kafka import KAFKA_API_VERSION
from feedback.registry import CONTROL_SIG_HEADER, read_live, signature_ok
from schemas.events import TOPICS, EventEnvelope, ModelPromoted, ModelRolledBack, parse_event

log = logging.getLogger(__name__)
SwapEvent = ModelPromoted | ModelRolledBack
Verify = Callable[[bytes, "bytes | None"], SwapEvent]


class Refused(ValueError):
    """A control event the gateway will not act on; `reason` labels the metric."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def verify_control(value: bytes, signature: bytes | None, *, key: bytes, models: Path, base_model: Path) -> SwapEvent:
    """The swap a control record orders, with its paths resolved; raises Refused.

    "base" is not in the registry: its paths are this gateway's own base model, whatever
    the event says (replicas may keep it in different places)."""
    if signature is None:
        raise Refused("unsigned", f"unsigned control event (no {CONTROL_SIG_HEADER} header)")
    if not signature_ok(key, value, signature):
        raise Refused("bad_signature", "control event signed with another key: the publisher's TAO_SIGNING_KEY "
                      "(or DATA_DIR/signing.key) must be the gateways'")
    try:
        ev = parse_event(value)
    except Exception as e:
        raise Refused("unreadable", f"unreadable control event: {e}") from e
    if not isinstance(ev, (ModelPromoted, ModelRolledBack)):
        raise Refused("unreadable", f"{ev.type} does not belong on tao.control")
    p = ev.payload
    if p.version == "base":
        paths = {"artifact_path": str(base_model), "adapter_path": None}
    else:
        root = models.resolve()
        paths = {}
        for name in ("artifact_path", "adapter_path"):
            raw = getattr(p, name)
            if raw is None:
                paths[name] = None
                continue
            resolved = Path(raw).resolve()  # follows symlinks: a link out of the registry is outside
            if not resolved.is_relative_to(root):
                raise Refused("path_outside", f"{ev.type} {p.version}: {name} {raw} is outside the model registry "
                              f"{root}")
            paths[name] = str(resolved)
    return ev.model_copy(update={"payload": p.model_copy(update=paths)})


def registry_live(data_dir: Path, verify: Verify) -> SwapEvent | None:
    """The last control event published (DATA_DIR/models/live.json), verified; None if none
    was ever published. Raises Refused."""
    record = read_live(data_dir)
    return None if record is None else verify(*record)


class ControlConsumer:
    def __init__(self, bootstrap: str, loop: asyncio.AbstractEventLoop,
                 on_event: Callable[[EventEnvelope], Awaitable[None]], verify: Verify,
                 on_refused: Callable[[str], None], topic: str = TOPICS["control"]):
        self.bootstrap = bootstrap
        self.loop = loop
        self.on_event = on_event
        self.verify = verify
        self.on_refused = on_refused
        self.topic = topic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tao-control", daemon=True)

    def start(self) -> "ControlConsumer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(3)  # a daemon thread: at worst it is blocked on a dead broker

    def _connect(self):
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                 api_version=KAFKA_API_VERSION,
                                 client_id="tao-gateway-control", request_timeout_ms=10000)
        tp = TopicPartition(self.topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        return consumer

    def check(self, rec) -> SwapEvent | None:
        """The record's swap, or None (refused: logged and counted)."""
        signature = next((v for k, v in (rec.headers or []) if k == CONTROL_SIG_HEADER), None)
        try:
            return self.verify(rec.value, signature)
        except Refused as e:
            log.error("refusing the control event at offset %s: %s", rec.offset, e)
            self.on_refused(e.reason)
            return None

    def _run(self) -> None:
        consumer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = self._connect()
                batch = consumer.poll(timeout_ms=500)
            except Exception as e:
                log.warning("tao.control unreachable (%s); retrying", e)
                if consumer is not None:
                    try:
                        consumer.close()
                    except Exception:
                        pass
                consumer = None
                self._stop.wait(2)
                continue
            last = None
            for records in batch.values():
                for rec in records:
                    last = self.check(rec) or last
            if last is not None:
                fut = asyncio.run_coroutine_threadsafe(self.on_event(last), self.loop)
                try:
                    fut.result()
                except Exception:
                    log.exception("swap to %s failed; still serving the previous version", last.payload.version)
        if consumer is not None:
            consumer.close()
