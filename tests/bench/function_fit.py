"""How often the function-fit source (trainer/beliefs.py, trainer/rewards/function_fit.py)
names the right function, measured against the lift benchmark's hidden gold.

For every tool request of the lift suite (tools_traffic and tools_eval: three functions
offered, shuffled), the base model's log-prob of each function's name where a call begins,
raw and calibrated (minus the content-free request's); the favourite at each margin is
compared with the gold call's function. Coverage: the share of requests with a favourite at
that margin (the rest are masked). Chance is 1/3.

    python -m tests.bench.function_fit --out /tmp/ff     # or make bench-function-fit
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from tests.bench.tasks import make_suite
from tests.models import BASE_MODEL
from trainer.prompts import Prompt

MARGINS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
RESULTS = Path(__file__).parent / "results"


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    import re

    return " ".join(sorted(set(re.findall(r"\b(?:avx512[a-z0-9_]*|amx[a-z0-9_]*)\b", text)))) or "no AVX-512"


def measure(model_dir: Path, dtype: str) -> dict:
    from trainer.beliefs import function_beliefs
    from trainer.generate import Engine
    from trainer.rewards.function_fit import favourite

    suite = make_suite()
    cases = [(split, i, c) for split in ("tools_traffic", "tools_eval") for i, c in enumerate(suite[split])]
    prompts = [Prompt(f"{split}:{i}", c["messages"], contract=c["params"]) for split, i, c in cases]
    gold = {p.prompt_id: c["gold"]["name"] for p, (_, _, c) in zip(prompts, cases)}
    engine = Engine(model_dir, dtype=dtype, log=lambda _: None)
    out: dict = {"cases": len(prompts), "arms": {}}
    for arm, calibrate in (("raw", False), ("calibrated", True)):
        t = time.perf_counter()
        beliefs = function_beliefs(prompts, engine, calibrate=calibrate)
        seconds = time.perf_counter() - t
        rows = []
        for m in MARGINS:
            picked = {pid: favourite(b, m) for pid, b in beliefs.items()}
            covered = [pid for pid, f in picked.items() if f is not None]
            right = sum(picked[pid] == gold[pid] for pid in covered)
            rows.append({"margin": m, "covered": len(covered), "right": right})
        out["arms"][arm] = {"seconds": round(seconds, 1), "rows": rows}
    return out


def report(result: dict, command: str, model_dir: Path, dtype: str) -> str:
    lines = ["# Function-fit benchmark", "", f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, CPU flags: {cpu_flags()}; model {model_dir.name} in {dtype} "
             "(transformers).", "",
             f"{result['cases']} tool requests of the lift suite (tools_traffic + tools_eval), three functions offered "
             "each; chance 1/3. Right: the favourite is the gold call's function. Covered: requests with a favourite "
             "at that margin (the others are masked: no opinion).", "",
             "| arm | margin (nats) | covered | right | accuracy on covered |", "|---|---|---|---|---|"]
    for arm, a in result["arms"].items():
        for r in a["rows"]:
            acc = f"{r['right'] / r['covered']:.3f}" if r["covered"] else "-"
            lines.append(f"| {arm} | {r['margin']:g} | {r['covered']} | {r['right']} | {acc} |")
    lines += ["", "Seconds per arm (all requests): " + ", ".join(f"{k} {a['seconds']}" for k, a in
                                                                 result["arms"].items()), ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=BASE_MODEL, help="model directory (default: the base model)")
    ap.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: what this CPU does well)")
    ap.add_argument("--out", type=Path, default=None, help="also write function_fit.md/.json here")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the report goes (tests/bench/results)")
    args = ap.parse_args(argv)
    from feedback.hardware import choose_dtype

    dtype = args.dtype or choose_dtype().dtype
    result = measure(args.model, dtype)
    command = "python -m tests.bench.function_fit" + (f" --out {args.out}" if args.out else "")
    text = report(result, command, args.model, dtype)
    for d in [args.results] + ([args.out] if args.out else []):
        d.mkdir(parents=True, exist_ok=True)
        (d / "function_fit.md").write_text(text)
        (d / "function_fit.json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
