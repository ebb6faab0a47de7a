"""Collector observability (issue 5): lag per partition, rows per second, dead-lettered
count and committed positions, in the worker's /metrics and in `tao status`.

A real worker process (`python -m trainer.worker`) on its own Tansu broker.
"""
from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from deploy.broker import running_tansu
from feedback.procs import free_port, spawn, stop, wait_http_ok
from schemas.events import TOPICS
from tests.feedback.test_collector import poison, produce, traffic, wait_for
from tests.feedback.metrics import metrics_at

pytestmark = pytest.mark.integration


def test_worker_metrics_and_tao_status(tmp_path):
    worker = None
    with running_tansu(str(tmp_path / "tansu.log")) as bootstrap:
        try:
            records = traffic(TOPICS, 120, 30)
            records += [(TOPICS["completions"], b"bad", poison("not_json", i)) for i in range(3)]
            produce(bootstrap, records)
            worker_port = free_port()
            env = {"TAO_KAFKA_BOOTSTRAP": bootstrap, "TAO_DATA_DIR": str(tmp_path / "data"),
                   "TAO_WORKER_PORT": str(worker_port), "TAO_CYCLE_INTERVAL_S": "86400"}
            worker = spawn([sys.executable, "-m", "trainer.worker"], env=env, log_path=str(tmp_path / "worker.log"))
            url = f"http://127.0.0.1:{worker_port}"
            wait_http_ok(url + "/healthz", 60, worker, "worker")
            wait_for(lambda: httpx.get(url + "/status").json()["collector"]["consumed"] >= 153, timeout=60,
                     what="the worker's collector")

            m = metrics_at(url)
            assert m["tao_collector_records_stored_total"] == 150
            assert m['tao_collector_deadlettered_total{reason="not_json"}'] == 3
            positions = {k: v for k, v in m.items() if k.startswith("tao_collector_position{")}
            lags = {k: v for k, v in m.items() if k.startswith("tao_collector_lag{")}
            assert sum(positions.values()) == 153 and len(positions) == 7  # 3 + 3 + 1 partitions
            assert set(lags.values()) == {0}
            assert m["tao_collector_rows_per_second"] > 0
            assert m["tao_collector_last_commit_timestamp_seconds"] > 0

            r = subprocess.run([sys.executable, "-m", "deploy.cli", "status", "--worker-url", url],
                               capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "160"})
            assert r.returncode == 0, r.stderr
            assert "120 completions, 30 feedback" in r.stdout
            assert "150 stored" in r.stdout and "lag 0" in r.stdout and "3 dead-lettered" in r.stdout
            assert "tao.completions" in r.stdout and "tao.control" in r.stdout
        finally:
            if worker is not None:
                stop(worker)

    r = subprocess.run([sys.executable, "-m", "deploy.cli", "status", "--worker-url", url],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no worker answers" in r.stderr
