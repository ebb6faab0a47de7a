"""`tao up`: the whole loop on one machine, on loopback.

Starts, in order: a Tansu broker (unless TAO_KAFKA_BOOTSTRAP names a Kafka), the topics,
the gateway (which starts vLLM as its own child, loopback only, never exposed) and the
worker (collector + scheduled TAO cycles). Prints where each listens. Ctrl-C or SIGTERM
stops every child, and their children, with nothing left running.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from pydantic import Field
from rich.console import Console
from rich.table import Table

from deploy.broker import create_topics, start_tansu
from feedback.procs import free_port, spawn, stop, wait_http_ok
from feedback.kafka import Bootstrap
from feedback.settings import TaoSettings

console = Console(stderr=True)


class StackSettings(TaoSettings):
    kafka_bootstrap: Bootstrap | None = Field(None, description="use this Kafka instead of starting a local Tansu")
    port: int = Field(8000, ge=1, le=65535, description="gateway port (the only one clients use)")
    worker_port: int = Field(8001, ge=1, le=65535)
    vllm_port: int = Field(0, ge=0, le=65535, description="vLLM's loopback port (0: any free port)")
    ready_timeout_s: float = Field(900, gt=0, description="how long to wait for vLLM to load")
    event_retention_days: float = Field(30, gt=0, description="retention of the topics it creates (as the worker's)")


class Stack:
    def __init__(self, settings: StackSettings):
        self.s = settings
        self.procs: dict[str, subprocess.Popen] = {}
        self.bootstrap = settings.kafka_bootstrap
        self.vllm_port = settings.vllm_port or free_port()
        self.logs = settings.data_dir.resolve() / "logs"

    def start(self) -> None:
        s = self.s
        if not (s.base_model / "config.json").exists():
            raise SystemExit(f"no model at {s.base_model}: run `make setup` (or set TAO_BASE_MODEL)")
        self.logs.mkdir(parents=True, exist_ok=True)
        from serving.settings import GatewaySettings

        # Said before anything starts: the dtype decides vLLM's speed by 2-4x either way.
        choice = GatewaySettings(base_model=s.base_model).dtype_choice()
        console.print(f"dtype    {choice.dtype} for vLLM, training and the gate ({choice.reason}; "
                      "TAO_DTYPE overrides)")
        if self.bootstrap is None:
            port = free_port()
            self.procs["broker"] = start_tansu(port, log_path=str(self.logs / "broker.log"))
            self.bootstrap = f"127.0.0.1:{port}"
            console.print(f"broker   Tansu on {self.bootstrap} (memory storage)")
        create_topics(self.bootstrap, retention_days=s.event_retention_days)
        common = {"TAO_KAFKA_BOOTSTRAP": self.bootstrap, "TAO_DATA_DIR": str(s.data_dir.resolve()),
                  "TAO_BASE_MODEL": str(s.base_model), "PYTHONUNBUFFERED": "1"}
        self.procs["gateway"] = spawn([sys.executable, "-m", "serving.main"], log_path=str(self.logs / "gateway.log"),
                                      env={**common, "TAO_PORT": str(s.port), "TAO_VLLM_PORT": str(self.vllm_port),
                                           # A laptop stack works with no key: open, on loopback only (the
                                           # gateway refuses it elsewhere); the first `tao keys add` turns keys on.
                                           "TAO_AUTH": os.environ.get("TAO_AUTH", "open")})
        self.procs["worker"] = spawn([sys.executable, "-m", "trainer.worker"], log_path=str(self.logs / "worker.log"),
                                     env={**common, "TAO_WORKER_PORT": str(s.worker_port),
                                          "TAO_EXPLORE_URL": f"http://127.0.0.1:{self.vllm_port}"})
        wait_http_ok(f"http://127.0.0.1:{s.port}/healthz", 60, self.procs["gateway"], "gateway")
        wait_http_ok(f"http://127.0.0.1:{s.worker_port}/healthz", 60, self.procs["worker"], "worker")
        console.print(f"waiting for vLLM to load the model (35-120 s on a CPU; log: {self.logs / 'gateway.log'}) ...")
        t0 = time.monotonic()
        wait_http_ok(f"http://127.0.0.1:{s.port}/readyz", s.ready_timeout_s, self.procs["gateway"], "vLLM")
        console.print(f"vLLM ready in {time.monotonic() - t0:.0f}s")
        self.write_stack_file()
        self.print_table()

    def write_stack_file(self) -> None:
        """DATA_DIR/stack.json: where each process listens, for scripts and `tao` commands."""
        info = {"gateway": f"http://127.0.0.1:{self.s.port}", "worker": f"http://127.0.0.1:{self.s.worker_port}",
                "vllm": f"http://127.0.0.1:{self.vllm_port}", "kafka_bootstrap": self.bootstrap,
                "pids": {name: p.pid for name, p in self.procs.items()}}
        (self.s.data_dir / "stack.json").write_text(json.dumps(info, indent=2))

    def print_table(self) -> None:
        s = self.s
        t = Table(title="tao-loop is up", show_header=True)
        t.add_column("process")
        t.add_column("listens on")
        t.add_column("log")
        t.add_row("gateway (OpenAI API)", f"http://127.0.0.1:{s.port}/v1", str(self.logs / "gateway.log"))
        t.add_row("vLLM (internal only)", f"http://127.0.0.1:{self.vllm_port}",
                  str(self.logs / f"vllm-{s.port}.log"))
        t.add_row("worker (status, cycles)", f"http://127.0.0.1:{s.worker_port}/status",
                  str(self.logs / "worker.log"))
        t.add_row("console (admin key)", f"http://127.0.0.1:{s.worker_port}/console", "`tao keys add NAME --admin`")
        t.add_row("Kafka", self.bootstrap or "", str(self.logs / "broker.log") if "broker" in self.procs else "external")
        console.print(t)
        console.print('model name for clients: "tao"; run a cycle now: `tao cycle --once`; stop: Ctrl-C')
        print("READY", flush=True)  # a line scripts and tests can wait for

    def wait(self, stop_event: threading.Event) -> str | None:
        """Until asked to stop, or a child dies (returns its name)."""
        while not stop_event.wait(1.0):
            for name, p in self.procs.items():
                if p.poll() is not None:
                    return name
        return None

    def stop(self) -> None:
        (self.s.data_dir / "stack.json").unlink(missing_ok=True)
        # Gateway first (it stops vLLM and flushes its events), then the worker, broker last.
        for name in ("gateway", "worker", "broker"):
            p = self.procs.get(name)
            if p is not None:
                console.print(f"stopping {name} ...")
                stop(p, timeout=30)
        console.print("stopped: nothing left running")


def main(settings: StackSettings) -> int:
    stack = Stack(settings)
    stop_event = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop_event.set())
    try:
        stack.start()
        dead = stack.wait(stop_event)
        if dead:
            console.print(f"[red]{dead} exited with {stack.procs[dead].returncode}; see {stack.logs}[/red]")
            return 1
        return 0
    except (TimeoutError, RuntimeError) as e:
        console.print(f"[red]start-up failed: {e}[/red] (logs: {stack.logs})")
        return 1
    finally:
        stack.stop()
