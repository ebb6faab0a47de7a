"""`tao collect`: the collector as a process of its own, and `tao collect --rebuild`.

The worker runs the same collector as a thread; this process is for a DuckDB filled while
no worker runs, and for rebuilding the file from the topics. Either way the process owns
the DuckDB file (DuckDB allows one writer), so it refuses to start while a worker runs.

    python -m feedback.collect            # settings: TAO_* (feedback/settings.py)
"""
from __future__ import annotations

import logging
import signal
import threading

from feedback.collector import Collector
from feedback.logs import setup_logging
from feedback.settings import CollectorSettings
from feedback.store import Store

log = logging.getLogger("feedback.collect")

PROGRESS_EVERY_S = 10.0


def run(settings: CollectorSettings, stop: threading.Event | None = None) -> None:
    """Collect until SIGTERM / SIGINT (or `stop`), logging progress every 10 s."""
    stop = stop or _stop_on_signals()
    store = Store(settings.db_path)
    collector = Collector(settings.kafka_bootstrap, store, max_poll_records=settings.collector_max_poll_records)
    try:
        if settings.collector_metrics_port:
            from prometheus_client import start_http_server

            from feedback.metrics import collector_registry

            start_http_server(settings.collector_metrics_port, addr="127.0.0.1",
                              registry=collector_registry(collector.counters))
            log.info("metrics on http://127.0.0.1:%d/metrics", settings.collector_metrics_port)
        log.info("collecting from %s into %s", settings.kafka_bootstrap, settings.db_path)
        collector.start()
        while not stop.wait(PROGRESS_EVERY_S):
            st = collector.counters.stats()
            log.info("stored %d rows (%.0f/s), lag %s, %d duplicates skipped, %d dead-lettered",
                     st["stored"], st["rows_per_second"], "?" if st["lag"] is None else st["lag"],
                     st["duplicates"], st["deadlettered"])
    finally:
        collector.stop()
        store.close()
        log.info("collector stopped: %s", collector.counters.as_dict())


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


if __name__ == "__main__":
    setup_logging()
    run(CollectorSettings())
