"""Consumes tao.control and hands ModelPromoted / ModelRolledBack to the gateway's swapper.

No consumer group: every gateway replica reads the whole topic from the start (each must
apply every swap), and a new replica catches up to the latest promoted version. Of a
batch of history only the last event is applied: intermediate versions are never served.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Awaitable, Callable

from feedback.kafka import KAFKA_API_VERSION
from schemas.events import TOPICS, EventEnvelope, ModelPromoted, ModelRolledBack, parse_event

log = logging.getLogger(__name__)


class ControlConsumer:
    def __init__(self, bootstrap: str, loop: asyncio.AbstractEventLoop,
                 on_event: Callable[[EventEnvelope], Awaitable[None]]):
        self.bootstrap = bootstrap
        self.loop = loop
        self.on_event = on_event
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
        tp = TopicPartition(TOPICS["control"], 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        return consumer

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
                    try:
                        ev = parse_event(rec.value)
                    except Exception as e:
                        log.error("ignoring unreadable control event at offset %s: %s", rec.offset, e)
                        continue
                    if isinstance(ev, (ModelPromoted, ModelRolledBack)):
                        last = ev
            if last is not None:
                fut = asyncio.run_coroutine_threadsafe(self.on_event(last), self.loop)
                try:
                    fut.result()
                except Exception:
                    log.exception("swap to %s failed; still serving the previous version", last.payload.version)
        if consumer is not None:
            consumer.close()
