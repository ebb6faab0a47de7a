"""A vLLM for a benchmark, launched as the gateway launches it, and the machine line of a report."""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def gateway_vllm(model_dir: Path | None = None, timeout_s: float = 900) -> Iterator[str]:
    """The URL of a vLLM serving `model_dir` (default: the gateway's base model) with the
    gateway's own arguments (serving.vllm.vllm_command: dtype for this CPU, tool parser, ...)
    on a free loopback port; stopped on leaving, its log kept only until then."""
    from feedback.procs import free_port, spawn, stop, wait_http_ok
    from serving.settings import GatewaySettings
    from serving.vllm import vllm_command, vllm_env

    settings = GatewaySettings()
    model = model_dir or Path(settings.base_model)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tao-bench-vllm-") as logs:
        log = Path(logs) / "vllm.log"
        proc = spawn(vllm_command(model, port, settings.vllm_server_args()), vllm_env(), str(log))
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http_ok(url + "/health", timeout_s, proc, what=f"vLLM for {model} (log: {log})")
            yield url
        finally:
            stop(proc, 20)


def machine_line(result: dict) -> str:
    """Cores, the CPU's AVX-512/AMX flags and the load before the run, from a result's fields."""
    return (f"Machine: {result['cores']} cores; CPU flags: {' '.join(result['cpu_flags']) or 'no AVX-512, no AMX'}; "
            f"load average before the run {result['load_before'][0]:.2f}.")


def start_report(result: dict, out: Path, stem: str, title: str) -> list[str]:
    """Write `result` as out/STEM.json; the Markdown report's first lines: title, command, machine."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    return [f"# {title}", "", f"Command: `{result['command']}`", "", machine_line(result)]
