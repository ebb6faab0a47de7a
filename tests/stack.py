"""A real local stack (`tao up` in a child process) for tests and benchmarks: start, wait, stop."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from feedback.procs import free_port


class Stack:
    def __init__(self, data_dir, env: dict[str, str] | None = None):
        self.port, self.worker_port, self.vllm_port = free_port(), free_port(), free_port()
        self.data_dir = data_dir
        env = {**os.environ, "TAO_PORT": str(self.port), "TAO_WORKER_PORT": str(self.worker_port),
               "TAO_VLLM_PORT": str(self.vllm_port), "TAO_DATA_DIR": str(self.data_dir),
               "TAO_CYCLE_INTERVAL_S": "86400", **(env or {})}
        env.pop("TAO_KAFKA_BOOTSTRAP", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", "up"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.strip() == "READY":
                self.ready.set()

    def wait_ready(self, timeout=900):
        deadline = time.monotonic() + timeout
        while not self.ready.wait(1):
            assert self.proc.poll() is None, "tao up exited:\n" + "".join(self.lines[-40:])
            assert time.monotonic() < deadline, "stack not ready:\n" + "".join(self.lines[-40:])
        self.info = json.loads((self.data_dir / "stack.json").read_text())

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def status(self):
        return httpx.get(f"http://127.0.0.1:{self.worker_port}/status", timeout=10).json()

    def wait_rows(self, completions, feedback, timeout=120):
        deadline = time.monotonic() + timeout
        while True:
            rows = self.status()["rows"]
            if rows["completions"] == completions and rows["feedback"] == feedback:
                return
            assert rows["completions"] <= completions and rows["feedback"] <= feedback, rows
            assert time.monotonic() < deadline, f"DuckDB has {rows}, expected {completions}/{feedback}"
            time.sleep(1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                raise
