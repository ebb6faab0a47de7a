"""One TAO cycle, as a recipe: select -> explore -> score -> pairs -> optimize -> gate -> publish.

Runs in a child process of the worker (`python -m trainer.cycle CYCLE_DIR`), reading a
Parquet snapshot the worker exported (never the DuckDB file) and writing everything it
produces into CYCLE_DIR: candidates.parquet, pairs.parquet, result.json. The worker loads
those into DuckDB afterwards. A new model version lands in DATA_DIR/models/VERSION.

Stages: select (trainer/selection.py) -> explore (trainer/explore.py) -> score (reward
sources, trainer/rewards.py) -> pairs (trainer/pairs.py) -> optimize (trainer/optimize.py)
-> gate (trainer/gate.py) -> publish (trainer/registry.py).
"""
from __future__ import annotations

import json
import sys
import time
import zlib
from pathlib import Path
from typing import Callable

from schemas.events import ModelPromotedPayload
from trainer.explore import Pace, fewshot_jobs, pick_exemplars, round_one_jobs, run_jobs, served_model_name
from trainer.gate import run_gate
from trainer.pairs import ScoredCandidate, build_pairs
from trainer.registry import publish_promoted, write_metadata
from trainer.judge import make_relative_judge
from trainer.rewards import (
    Candidate, Prompt, agreement, constraint_verifier, ensemble, json_verifier, sql_verifier, user_feedback,
)
from trainer.selection import select_prompts
from trainer.settings import WorkerSettings


def say(msg: str) -> None:
    print(f"[cycle {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- stages -----------------------------------------------------------------------------
def explore_all(prompts: list[Prompt], settings: WorkerSettings,
                sources: dict[str, tuple[float, Callable]]) -> dict[str, list[Candidate]]:
    """Round one (sampling and scaffolds), then few-shot from round one's best answers."""
    model = served_model_name(settings.explore_url)
    pool: dict[str, list[Candidate]] = {p.prompt_id: [] for p in prompts}
    pace = Pace(settings.explore_concurrency)  # one measure of the engine's speed for both rounds

    def progress(label, d, n):
        if d % max(1, n // 5) == 0 or d == n:
            tps = pace.tokens_per_s()
            say(f"explore {label}: {d}/{n} requests" + (f", {tps:.0f} tok/s" if tps else ""))

    def run(jobs, label):
        got = run_jobs(jobs, settings.explore_url, model, settings.samples_per_strategy, settings.explore_max_tokens,
                       settings.explore_concurrency, seed=settings.seed, pace=pace,
                       progress=lambda d, n: progress(label, d, n))
        for pid, cands in got.items():
            pool[pid].extend(cands)

    run(round_one_jobs(prompts, settings.explore_strategies), "round 1")
    add_served_and_corrections(prompts, pool)
    if "fewshot" in settings.explore_strategies:
        scored = score(prompts, pool, sources)
        best = {pid: max(((s.candidate.text, s.score) for s in items if s.score is not None), key=lambda x: x[1])
                for pid, items in scored.items() if any(s.score is not None for s in items)}
        exemplars = pick_exemplars(prompts, best, settings.exemplar_min_score)
        jobs = fewshot_jobs(prompts, exemplars)
        say(f"explore: {sum(map(len, exemplars.values()))} self-bootstrapped exemplars, {len(jobs)} few-shot requests")
        if jobs:
            run(jobs, "few-shot")
    return pool


def add_served_and_corrections(prompts: list[Prompt], pool: dict[str, list[Candidate]]) -> None:
    """The answer users actually got, and any correction they wrote, join the pool."""
    for p in prompts:
        if p.served:
            pool[p.prompt_id].append(Candidate(p.served, "served"))
        for fb in p.feedback:
            if fb["kind"] == "correction":
                pool[p.prompt_id].append(Candidate(str(fb["value"]), "correction"))


# Verifiers whose pass rate must not drop at the gate (agreement needs a group: not here).
VERIFIERS = {"json": json_verifier, "sql": sql_verifier, "constraints": constraint_verifier}


def reward_sources(settings: WorkerSettings, reward_model=None) -> dict[str, tuple[float, Callable]]:
    sources = {"json": (settings.weight_verifier, json_verifier),
               "sql": (settings.weight_verifier, sql_verifier),
               "constraints": (settings.weight_constraints, constraint_verifier),
               "agreement": (settings.weight_agreement, agreement),
               "feedback": (settings.weight_feedback, user_feedback)}
    if settings.judge_url:
        model = settings.judge_model or served_model_name(settings.judge_url.rstrip("/").removesuffix("/v1"))
        sources["judge"] = (settings.weight_judge, make_relative_judge(
            settings.judge_url, model, settings.judge_rubric, api_key=settings.judge_api_key,
            timeout_s=settings.judge_timeout_s, structured=settings.judge_structured_output,
            group_chars=settings.judge_max_chars, shuffle=settings.judge_shuffle))
    if reward_model is not None:
        sources["reward_model"] = (settings.weight_reward_model, reward_model)
    return sources


def fit_reward_model(prompts: list[Prompt], settings: WorkerSettings):
    """A reward model on this cycle's user feedback (training prompts only: the gate's held-out
    prompts never leak into it). None when feedback is too thin or it does not beat guessing."""
    from trainer.reward_model import FrozenEncoder, examples_from_prompts, train_reward_model

    if settings.weight_reward_model == 0:
        return None, None
    examples = examples_from_prompts(prompts)
    seed = zlib.crc32(settings.split_seed.encode())  # the reward model wants an int seed
    rm = train_reward_model(examples, seed=seed, encoder=FrozenEncoder(settings.base_model)) if examples else None
    if rm is None:
        return None, {"examples": len(examples), "used": False}
    report = {**rm.report(), "used": rm.heldout_accuracy > rm.baseline_accuracy}
    return (rm if report["used"] else None), report


def gate_sources(sources: dict[str, tuple[float, Callable]]) -> dict[str, tuple[float, Callable]]:
    # User feedback speaks only of served answers, never of the gate's fresh ones.
    return {k: v for k, v in sources.items() if k != "feedback"}


def score(prompts: list[Prompt], pool: dict[str, list[Candidate]],
          sources: dict[str, tuple[float, Callable]]) -> dict[str, list[ScoredCandidate]]:
    out = {}
    for p in prompts:
        scores, detail = ensemble(sources, p, pool[p.prompt_id])
        out[p.prompt_id] = [ScoredCandidate(c, s, d) for c, s, d in zip(pool[p.prompt_id], scores, detail)]
    return out


def save_stage_outputs(cycle_dir: Path, scored: dict[str, list[ScoredCandidate]], pairs: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cand_rows = [{"prompt_id": pid, "strategy": s.candidate.strategy, "text": s.candidate.text, "score": s.score,
                  "scores": json.dumps(s.detail)} for pid, items in scored.items() for s in items]
    pq.write_table(pa.Table.from_pylist(cand_rows, schema=pa.schema(
        [("prompt_id", pa.string()), ("strategy", pa.string()), ("text", pa.string()), ("score", pa.float64()),
         ("scores", pa.string())])), cycle_dir / "candidates.parquet")
    pair_rows = [{"prompt_id": p["prompt_id"], "prompt": json.dumps(p["prompt"]), "chosen": p["chosen"],
                  "rejected": p["rejected"], "margin": p["margin"]} for p in pairs]
    pq.write_table(pa.Table.from_pylist(pair_rows, schema=pa.schema(
        [("prompt_id", pa.string()), ("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
         ("margin", pa.float64())])), cycle_dir / "pairs.parquet")


# -- the recipe -------------------------------------------------------------------------
def run_cycle(settings: WorkerSettings, job: dict, cycle_dir: Path) -> dict:
    """`job`: cycle_id, snapshot, since, version, parent, parent_path (from the worker)."""
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    result = {"cycle_id": job["cycle_id"], "status": "skipped", "version": None, "parent": job["parent"],
              "watermark": job["since"], "counts": {}, "timings": timings}

    def stage_done(name: str, started: float) -> None:
        timings[name] = round(time.monotonic() - started, 2)

    # 1. Select: new prompts (+ replay), deduplicated, scrubbed, capped per tenant, split.
    t = time.monotonic()
    sel = select_prompts(Path(job["snapshot"]), job["since"], limit=settings.max_prompts,
                         replay_fraction=settings.replay_fraction, tenant_cap=settings.tenant_cap,
                         holdout_fraction=settings.holdout_fraction,
                         near_dup_threshold=settings.near_dup_threshold, seed=settings.split_seed)
    prompts = sel.train
    result["watermark"] = sel.watermark or job["since"]
    result["counts"].update(prompts=len(prompts), heldout=len(sel.heldout))
    result["select"] = sel.stats
    stage_done("select", t)
    say(f"select: {len(prompts)} training prompts, {len(sel.heldout)} held out ({json.dumps(sel.stats)})")
    if not prompts:
        return {**result, "reason": "no new prompts since the last cycle"}

    # Reward sources for this cycle, including a reward model fit on users' feedback.
    t = time.monotonic()
    reward_model, result["reward_model"] = fit_reward_model(prompts, settings)
    sources = reward_sources(settings, reward_model)
    stage_done("reward_model", t)
    say(f"reward sources: {', '.join(n for n, (w, _) in sources.items() if w > 0)}"
        + (f"; reward model {result['reward_model']}" if result["reward_model"] else ""))

    # 2. Explore: several strategies per prompt on the live model; served answers join.
    t = time.monotonic()
    pool = explore_all(prompts, settings, sources)
    stage_done("explore", t)
    result["counts"]["candidates"] = sum(len(v) for v in pool.values())

    # 3. Score without labels, and pair best against worst on the bare prompt.
    t = time.monotonic()
    scored = score(prompts, pool, sources)
    pairs = build_pairs(prompts, scored, settings.min_margin, settings.min_best)
    stage_done("score", t)
    save_stage_outputs(cycle_dir, scored, pairs)
    all_scores = [s.score for v in scored.values() for s in v if s.score is not None]
    result["counts"].update(scored=len(all_scores), pairs=len(pairs))
    result["reward"] = {"mean": round(sum(all_scores) / len(all_scores), 4) if all_scores else None,
                        "mean_best": round(sum(max((s.score for s in v if s.score is not None), default=0)
                                               for v in scored.values()) / len(scored), 4)}
    say(f"score: {len(all_scores)} candidates scored, mean reward {result['reward']['mean']}, {len(pairs)} pairs")
    if len(pairs) < settings.min_pairs:
        return {**result, "reason": f"only {len(pairs)} pairs (TAO_MIN_PAIRS={settings.min_pairs}): nothing to train"}

    # 4. Optimize: DPO plus NLL on the chosen answer (default) with a LoRA, merged into a servable directory.
    from trainer.optimize import train  # torch/trl load only when there is something to train

    t = time.monotonic()
    version_dir = settings.data_dir / "models" / job["version"]
    version_dir.mkdir(parents=True, exist_ok=True)
    weights = version_dir / "weights"
    options = {"epochs": settings.epochs, "lr": settings.learning_rate, "lora_r": settings.lora_r,
               "seed": settings.seed, "log": say}
    if settings.optimizer in ("dpo", "dpo_nll"):
        options["beta"] = settings.beta

    def grpo_reward(messages: list[dict], answers: list[str]) -> list[float | None]:
        scores, _ = ensemble(gate_sources(sources), Prompt("grpo", messages), [Candidate(a, "grpo") for a in answers])
        return scores

    say(f"optimize: {settings.optimizer} on {len(pairs)} pairs")
    result["train"] = {"method": settings.optimizer, **train(settings.optimizer, Path(job["parent_path"]), pairs,
                                                             weights, reward_fn=grpo_reward, **options)}
    stage_done("optimize", t)

    # 5. Gate: the candidate must beat the live model on held-out prompts and the canary set.
    t = time.monotonic()
    if settings.gate_enabled:
        choice = settings.dtype_choice()
        say(f"gate: generating in {choice.dtype} ({choice.reason})")
        # At most N held-out prompts: generating on the CPU is what the gate costs.
        gate = run_gate(Path(job["parent_path"]), weights, sel.heldout[: settings.gate_max_prompts],
                        gate_sources(sources), VERIFIERS,
                        threshold=settings.gate_threshold, canary_tolerance=settings.canary_tolerance,
                        max_new_tokens=settings.gate_max_tokens, dtype=settings.dtype_choice().dtype,
                        log=say).as_dict()
    else:
        gate = {"promote": True, "reasons": ["gate disabled (TAO_GATE_ENABLED=false)"]}
    stage_done("gate", t)
    result["gate"] = gate
    say(f"gate: {'promote' if gate['promote'] else 'reject'}: {'; '.join(gate['reasons'])}")

    # 6. Publish: the version directory is complete (metadata last) before anyone hears of it.
    metrics = {k: float(v) for k, v in {**result["train"], "mean_reward": result["reward"]["mean"] or 0,
                                        "gate_win_rate": gate.get("win_rate")}.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    adapter = None
    if gate["promote"] and settings.swap_mode == "lora":
        # Gateways in lora mode serve the version as an adapter on the base model.
        from trainer.adapter import extract_adapter

        t = time.monotonic()
        result["adapter"] = extract_adapter(settings.base_model, weights, version_dir / "adapter",
                                            rank=settings.lora_max_rank)
        adapter = str((version_dir / "adapter").resolve())
        stage_done("adapter", t)
        say(f"adapter: {json.dumps(result['adapter'])}")
    payload = ModelPromotedPayload(version=job["version"], artifact_path=str(weights.resolve()),
                                   swap_mode=settings.swap_mode, adapter_path=adapter, parent=job["parent"],
                                   cycle_id=job["cycle_id"], metrics=metrics)
    status = "promoted" if gate["promote"] else "rejected"
    write_metadata(version_dir, {**payload.model_dump(), "status": status, "counts": result["counts"],
                                 "reward": result["reward"], "train": result["train"], "gate": gate,
                                 "timings": timings})
    if gate["promote"]:
        t = time.monotonic()
        publish_promoted(settings.kafka_bootstrap, payload, key=settings.signing_key_bytes(),
                         data_dir=settings.data_dir)
        stage_done("publish", t)
    timings["total"] = round(time.monotonic() - t0, 2)
    say(f"{status} {job['version']} (parent {job['parent']}) in {timings['total']:.0f}s")
    return {**result, "status": status, "version": job["version"],
            "reason": None if gate["promote"] else "; ".join(gate["reasons"])}


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the worker dies. The cycle runs in a session of its
    own (so the worker can kill its whole group on a budget), which keeps it out of reach
    of a kill aimed at the worker's group: a worker killed hard must not leave it training."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the worker's own stop path still kills it
        pass


def main(cycle_dir: Path) -> int:
    """Child-process entry: CYCLE_DIR holds job.json and settings.json written by the worker."""
    _die_with_parent()
    job = json.loads((cycle_dir / "job.json").read_text())
    settings = WorkerSettings.model_validate_json((cycle_dir / "settings.json").read_text())
    try:
        result = run_cycle(settings, job, cycle_dir)
    except Exception as e:  # recorded, not swallowed: the worker marks the cycle failed
        import traceback

        traceback.print_exc()
        result = {"cycle_id": job["cycle_id"], "status": "failed", "reason": f"{type(e).__name__}: {e}"}
    tmp = cycle_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.rename(cycle_dir / "result.json")
    return 0 if result["status"] != "failed" else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
