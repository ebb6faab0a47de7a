"""Measure model directories on the lift benchmark's eval splits, one vLLM each.

    .venv/bin/python -m tests.bench.measure_models BASE_DIR DATA_DIR/models/v1/weights ...

`make bench-lift` measures only the model a cycle leaves serving; a candidate the gate refused
is never measured there. This measures any weights directory (the base, or a refused
candidate's `models/vN/weights`, kept in a run's data directory with `--keep-data`) exactly as
the lift benchmark measures the served model: same suite and seed, greedy answers from a vLLM
launched as the gateway launches it, scored against the hidden gold (tests/bench/metrics.py),
and the regression split sampled with common seeds, each model's difference to the first
model given with its interval. So it says whether the gate refused a better model, and by how
much, and whether a model forgot (list the base first).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from tests.bench.gateway_vllm import gateway_vllm
from tests.bench.lift import versus_base


def say(msg: str) -> None:
    print(f"[measure-models {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def measure_model(model_dir: Path, evals: dict[str, list[dict]], timeout_s: float) -> dict:
    from tests.bench.lift import measure_url

    with gateway_vllm(model_dir, timeout_s) as url:
        return measure_url(url, evals)


def table(results: dict[str, dict]) -> str:
    splits = [k for k in next(iter(results.values())) if k != "tokens_per_s"]
    lines = ["| model | " + " | ".join(splits) + " | tok/s |", "|---|" + "---|" * (len(splits) + 1)]
    for name, m in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[s]['score']:.3f}" for s in splits)
                     + f" | {m['tokens_per_s']:.1f} |")
    fams = sorted({f for m in results.values() for f in m.get("eval_seen", {}).get("families", {})})
    if fams:
        lines += ["", "| model | " + " | ".join(f"seen {f}" for f in fams) + " |", "|---|" + "---|" * len(fams)]
        for name, m in results.items():
            lines.append(f"| {name} | " + " | ".join(f"{m['eval_seen']['families'][f]['score']:.3f}" for f in fams) + " |")
    first, ref = next(iter(results.items()))
    for split in (s for s in splits if s.endswith("_sampled")):
        lines += ["", f"{split}, each model - {first} in points (paired over prompts, common seeds):"]
        for name, m in list(results.items())[1:]:
            d = versus_base(ref, m, split)
            lines.append(f"- {name}: {d.text(points=True) if d else 'n/a'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from tests.bench.lift import load_suite

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", type=Path, help="model directories (config.json and weights)")
    p.add_argument("--seed", type=int, default=0, help="the suite's seed (the lift run's --seed)")
    p.add_argument("--n-traffic", type=int, default=160, help="the lift run's --n-traffic")
    p.add_argument("--timeout", type=float, default=900, help="seconds one vLLM may take to start")
    p.add_argument("--json", type=Path, help="also write every measurement here")
    args = p.parse_args(argv)
    missing = [str(m) for m in args.models if not (m / "config.json").is_file()]
    if missing:
        p.error(f"not a model directory (no config.json): {', '.join(missing)}")
    _, evals = load_suite(None, args.seed, args.n_traffic)
    results = {}
    for m in args.models:
        say(f"measuring {m}")
        results[str(m)] = measure_model(m, evals, args.timeout)
    print(f"Measured on {os.cpu_count()} cores; command: python -m tests.bench.measure_models "
          + " ".join(argv if argv is not None else sys.argv[1:]))
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
