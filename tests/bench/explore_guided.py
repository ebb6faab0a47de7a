"""Guided scaffolds benchmark: does decoding a scaffold under a JSON schema find better
candidates (TAO_EXPLORE_GUIDED; trainer/explore.py `guide`), and values held to the request's
own words (the `copy` strategy, trainer/copying.py)?

    make bench-explore
    .venv/bin/python -m tests.bench.explore_guided --tools 24 --extraction 30 --rounds 2

One vLLM, launched as the gateway launches it (serving.vllm.vllm_command, the gateway's
settings), serves the base model. The scaffold strategy of the trainer's own exploration
(trainer.explore.round_one_jobs and run_jobs, n samples a request, the worker's defaults for
n, max tokens and concurrency) runs on the benchmark's traffic prompts twice per round, unguided
and guided, in alternating order, with one sampling seed. Each candidate is scored against the
hidden gold with the lift benchmark's metrics (tests/bench/metrics.py): tool requests by the
exact call (name and every argument), extraction requests whose keys are in their words (the
wordings `fields`, `keys`, `into_json`; the `schema` wording carries its own schema, so guiding
changes nothing there) by the share of fields right.
Results: tests/bench/results/explore_guided.md (+ .json), with the CPU's flags.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from tests.bench.gateway_vllm import gateway_vllm, start_report

RESULTS = Path(__file__).parent / "results"
TEXT_KEY_FAMILIES = ("fields", "keys", "into_json")


def say(msg: str) -> None:
    print(f"[explore-guided {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pick_cases(n_tools: int, n_extraction: int, seed: int = 0) -> dict[str, list[dict]]:
    """The benchmark's traffic prompts the guide applies to: tool requests, and extraction
    requests whose keys are only in their words."""
    from tests.bench.tasks import make_suite

    suite = make_suite(seed)
    return {"tools": suite["tools_traffic"][:n_tools],
            "extraction": [c for c in suite["traffic"] if c["family"] in TEXT_KEY_FAMILIES][:n_extraction]}


def as_answer(candidate) -> str:
    """A candidate as the lift benchmark scores an answer: its calls as JSON, else its text."""
    return json.dumps(candidate.tool_calls) if candidate.tool_calls else candidate.text


ARMS = ("unguided", "guided", "copy")


def measure(cases: list[dict], arm: str, url: str, model: str, n: int, max_tokens: int,
            concurrency: int, seed: int) -> dict:
    """One arm on one kind of prompt, scored against the gold: the scaffold's candidates
    unguided or guided, or the `copy` strategy's (values held to the request's spans)."""
    from tests.bench.metrics import score_case
    from trainer.explore import Pace, round_one_jobs, run_jobs
    from trainer.prompts import Prompt

    prompts = [Prompt(str(i), c["messages"], contract=dict(c.get("params") or {})) for i, c in enumerate(cases)]
    jobs = round_one_jobs(prompts, ["copy" if arm == "copy" else "scaffold"], guided=arm != "unguided")
    pace = Pace(concurrency)
    t0 = time.monotonic()
    got = run_jobs(jobs, url, model, n, max_tokens, concurrency, seed=seed, pace=pace)
    seconds = time.monotonic() - t0
    scores = {pid: [score_case(cases[int(pid)], as_answer(c)) for c in cands] for pid, cands in got.items()}
    flat = [s for v in scores.values() for s in v]
    return {"requests": len(jobs), "guided_requests": sum(j.guided for j in jobs), "candidates": len(flat),
            "mean_score": round(sum(flat) / len(flat), 4) if flat else 0.0,
            "exact": sum(s == 1.0 for s in flat),
            "prompts_with_exact": sum(any(s == 1.0 for s in v) for v in scores.values()),
            "prompts": len(cases), "seconds": round(seconds, 1),
            "tok_s": round(pace.tokens_per_s() or 0.0, 1)}


def run(cases: dict[str, list[dict]], rounds: int, url: str, model: str, n: int, max_tokens: int,
        concurrency: int, seed: int, arms: tuple[str, ...] = ARMS) -> list[dict]:
    rows = []
    for r in range(rounds):
        # Reverse the order every other round: a warm-up or a drift in speed favours no arm.
        for arm in (arms if r % 2 == 0 else arms[::-1]):
            for kind, cs in cases.items():
                got = measure(cs, arm, url, model, n, max_tokens, concurrency, seed)
                rows.append({"round": r + 1, "kind": kind, "arm": arm, "guided": arm != "unguided", **got})
                say(f"round {r + 1} {kind} {arm}: exact {got['exact']}/{got['candidates']}, "
                    f"prompts {got['prompts_with_exact']}/{got['prompts']}, mean {got['mean_score']}, "
                    f"{got['seconds']} s")
    return rows


def write(result: dict, out: Path) -> None:
    lines = start_report(result, out, "explore_guided", "Guided scaffolds benchmark")
    lines[-1] += f" {result['vllm']}, model {result['model']}, arguments `{result['args']}`."
    lines += ["",
             f"The scaffold strategy (unguided, guided) and the copy strategy (guided, every value a span or a "
             f"number of the request: trainer/copying.py), n={result['n']} samples a request, max {result['max_tokens']} tokens, "
             f"{result['concurrency']} requests at once, seed {result['seed']}. Exact: a candidate scoring 1 "
             "(tools: the right function with every argument right and none extra; extraction: every "
             "field right). Score: the lift benchmark's metric, mean over candidates.", "",
             "| round | prompts | arm | requests | candidates | exact | prompts with an exact one | mean score | s | tok/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['round']} | {r['kind']} ({r['prompts']}) | {_arm(r)} | "
                     f"{r['requests']} | {r['candidates']} | {r['exact']} | {r['prompts_with_exact']} | "
                     f"{r['mean_score']:.3f} | {r['seconds']} | {r['tok_s']} |")
    lines.append("")
    for kind in dict.fromkeys(r["kind"] for r in result["rows"]):
        arms = {}
        for r in result["rows"]:
            if r["kind"] == kind:
                arms.setdefault(_arm(r), []).append(r)
        if "unguided" not in arms:
            continue
        tot = {a: (sum(r["exact"] for r in rs), sum(r["candidates"] for r in rs),
                   sum(r["mean_score"] * r["candidates"] for r in rs) / max(1, sum(r["candidates"] for r in rs)),
                   sum(r["seconds"] for r in rs)) for a, rs in arms.items()}
        eu, cu, mu, su = tot["unguided"]
        for arm, (eg, cg, mg, sg) in tot.items():
            if arm == "unguided":
                continue
            lines.append(f"- {kind}: exact candidates {eg}/{cg} {arm} vs {eu}/{cu} unguided; mean score "
                         f"{mg:.3f} vs {mu:.3f}; time {arm}/unguided {sg / su:.2f} (same run, alternated)."
                         if su else f"- {kind}: no time measured")
    (out / "explore_guided.md").write_text("\n".join(lines) + "\n")


def _arm(row: dict) -> str:
    return row.get("arm") or ("guided" if row["guided"] else "unguided")  # rows of runs before `copy`


def main(argv: list[str] | None = None) -> None:
    from importlib.metadata import version

    from feedback.hardware import cpu_flags
    from serving.settings import GatewaySettings
    from serving.vllm import SERVED_NAME, is_vllm_cpu
    from trainer.settings import WorkerSettings

    defaults = WorkerSettings.model_fields
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tools", type=int, default=24, help="tool requests (the benchmark's traffic)")
    p.add_argument("--extraction", type=int, default=30, help="extraction requests with their keys in words")
    p.add_argument("--rounds", type=int, default=2, help="rounds of every arm, order reversed every other round")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {', '.join(ARMS)}")
    p.add_argument("--n", type=int, default=defaults["samples_per_strategy"].default, help="samples a request")
    p.add_argument("--max-tokens", type=int, default=defaults["explore_max_tokens"].default)
    p.add_argument("--concurrency", type=int, default=defaults["explore_concurrency"].default)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--timeout", type=float, default=900, help="seconds vLLM may take to start")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    if not arms or set(arms) - set(ARMS):
        p.error(f"--arms: a comma list of {', '.join(ARMS)}")
    command = "python -m tests.bench.explore_guided " + shlex.join(argv if argv is not None else sys.argv[1:])
    load = os.getloadavg()
    settings = GatewaySettings()
    vllm_args = settings.vllm_server_args()
    cases = pick_cases(args.tools, args.extraction)
    say("starting vLLM")
    with gateway_vllm(timeout_s=args.timeout) as url:
        rows = run(cases, args.rounds, url, SERVED_NAME, args.n, args.max_tokens, args.concurrency, args.seed,
                   arms)
    dist = "vllm-cpu" if is_vllm_cpu() else "vllm"
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx")))
    result = {"command": command, "cores": os.cpu_count(), "cpu_flags": flags, "load_before": load,
              "vllm": f"{dist} {version(dist)}", "model": Path(settings.base_model).name, "args": vllm_args,
              "n": args.n, "max_tokens": args.max_tokens, "concurrency": args.concurrency, "seed": args.seed,
              "rows": rows}
    write(result, args.out)
    say(f"results: {args.out / 'explore_guided.md'}")


if __name__ == "__main__":
    main()
