"""One TAO cycle, as a recipe: select -> explore -> score -> pairs -> optimize -> gate -> publish.

Runs in a child process of the worker (`python -m trainer.cycle CYCLE_DIR`), reading a
Parquet snapshot the worker exported (never the DuckDB file) and writing everything it
produces into CYCLE_DIR: candidates.parquet, pairs.parquet, result.json. The worker loads
those into DuckDB afterwards. A new model version lands in DATA_DIR/models/VERSION.

Stages: select (trainer/selection.py) -> explore (trainer/explore.py) -> score (reward
sources, trainer/rewards/) -> pairs (trainer/pairs.py) -> optimize (trainer/optimize.py)
-> gate (trainer/gate.py) -> publish (feedback/registry.py, the registry contract). The
worker's job and the result are typed (trainer/job.py); each stage is timed and said by
`with stages(name):` (trainer/stages.py).
"""
from __future__ import annotations

import json
import shutil
import sys
import time
import zlib
from pathlib import Path

from feedback.registry import live_version, publish_promoted, write_metadata
from schemas.registry import VersionMetadata
from trainer.explore import Pace, fewshot_jobs, pick_exemplars, round_one_jobs, run_jobs, served_model_name
from trainer.gate import Gate, GateResult
from trainer.interpolate import interpolate
from trainer.job import CycleJob, CycleResult, Status
from trainer.pairs import FORMAT_ONLY, Pair, ScoredCandidate, build_pairs
from trainer.prompts import USER_WRITTEN, Candidate, Prompt, RewardSource, answer_text
from trainer.replay import replay_pairs
from trainer.rewards import agreement, constraint_verifier, ensemble, json_verifier, sql_verifier
from trainer.rewards.consistency import Fallback, majority_vote
from trainer.rewards.feedback import UserFeedback, corroborated
from trainer.rewards.function_fit import FunctionFit
from trainer.rewards.contract import structured_output_verifier, tool_call_verifier
from trainer.rewards.judge import make_relative_judge
from trainer.selection import Selection, select_prompts
from trainer.settings import WorkerSettings
from trainer.stages import Stages

# The ensemble's sources: name -> (weight, source).
Sources = dict[str, tuple[float, RewardSource]]
Pool = dict[str, list[Candidate]]  # prompt_id -> its candidates
Scored = dict[str, list[ScoredCandidate]]


def say(msg: str) -> None:
    print(f"[cycle {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- stages -----------------------------------------------------------------------------
def explore_all(prompts: list[Prompt], settings: WorkerSettings,
                sources: Sources) -> Pool:
    """Round one (sampling and scaffolds), then few-shot from round one's best answers."""
    model = served_model_name(settings.explore_url)
    pool: Pool = {p.prompt_id: [] for p in prompts}
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

    run(round_one_jobs(prompts, settings.explore_strategies, guided=settings.explore_guided), "round 1")
    add_served_and_corrections(prompts, pool)
    if "fewshot" in settings.explore_strategies:
        scored = score(prompts, pool, sources)
        # A correction is one tenant's text: it may be scored and paired like any candidate, but
        # never shown as a demonstration to every prompt of its shape (one key could steer them all).
        trusted = {pid: [s for s in items if s.score is not None and s.candidate.strategy not in USER_WRITTEN]
                   for pid, items in scored.items()}
        best = {pid: max(((s.candidate, s.score) for s in items), key=lambda x: x[1])
                for pid, items in trusted.items() if items}
        exemplars = pick_exemplars(prompts, best, settings.exemplar_min_score)
        jobs = fewshot_jobs(prompts, exemplars)
        say(f"explore: {sum(map(len, exemplars.values()))} self-bootstrapped exemplars, {len(jobs)} few-shot requests")
        if jobs:
            run(jobs, "few-shot")
    return pool


def add_served_and_corrections(prompts: list[Prompt], pool: Pool) -> None:
    """The answer users actually got, and any correction they wrote, join the pool."""
    for p in prompts:
        if p.served or p.served_tool_calls:
            pool[p.prompt_id].append(Candidate(p.served or "", "served", tool_calls=p.served_tool_calls))
        for fb in p.feedback:
            if fb["kind"] == "correction":
                pool[p.prompt_id].append(Candidate(str(fb["value"]), "correction"))


# Verifiers whose pass rate must not drop at the gate (agreement needs a group: not here).
VERIFIERS = {"json": json_verifier, "sql": sql_verifier, "constraints": constraint_verifier,
             "structured_output": structured_output_verifier, "tool_calls": tool_call_verifier}
# Those that check what an answer says, not only its form: the ones pairs.FORMAT_ONLY leaves.
SUBSTANCE = {name: v for name, v in VERIFIERS.items() if name not in FORMAT_ONLY}


def reward_sources(settings: WorkerSettings, reward_model: RewardSource | None = None,
                   function_fit: FunctionFit | None = None) -> Sources:
    sources = {"json": (settings.weight_verifier, json_verifier),
               "sql": (settings.weight_verifier, sql_verifier),
               # What the request's own parameters ask (response_format, tools): trainer/rewards/contract.py.
               "structured_output": (settings.weight_verifier, structured_output_verifier),
               "tool_calls": (settings.weight_verifier, tool_call_verifier),
               "constraints": (settings.weight_constraints, constraint_verifier),
               "agreement": (settings.weight_agreement, agreement),
               # Where no verifier of substance judges (free questions, arithmetic): the clear
               # majority's short answer or JSON fields; masked where there is none.
               "majority": (settings.weight_majority, Fallback(majority_vote, SUBSTANCE)),
               # Thumbs and ratings of served answers; a correction only when corroborated.
               "feedback": (settings.weight_feedback, UserFeedback(SUBSTANCE, settings.correction_min_tenants))}
    if function_fit is not None:
        # Which offered function the live model itself would call (training prompts only).
        sources["function_fit"] = (settings.weight_function_fit, function_fit)
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
    from trainer.reward_model import FrozenEncoder, balance_tenants, examples_from_prompts, train_reward_model

    if settings.weight_reward_model == 0:
        return None, None
    # A correction labels the reward model's "good" only when corroborated, as in the ensemble.
    examples = examples_from_prompts(prompts, lambda p, text: corroborated(p, text, settings.correction_min_tenants))
    # No one key's thumbs decide what it learns: enough tenants, none above the tenant cap.
    examples, tenancy = balance_tenants(examples, cap=settings.tenant_cap,
                                        min_tenants=settings.reward_model_min_tenants)
    seed = zlib.crc32(settings.split_seed.encode())  # the reward model wants an int seed
    rm = train_reward_model(examples, seed=seed, encoder=FrozenEncoder(settings.base_model)) if examples else None
    if rm is None:
        return None, {"examples": len(examples), "used": False, "tenancy": tenancy}
    report = {**rm.report(), "used": rm.heldout_accuracy > rm.baseline_accuracy, "tenancy": tenancy}
    return (rm if report["used"] else None), report


def function_fit(settings: WorkerSettings, job: CycleJob, prompts: list[Prompt]) -> tuple[FunctionFit | None, dict]:
    """The live model's log-prob of each offered function's name, for the training prompts
    that offer a choice of tools (trainer/beliefs.py); None when the source is off or no
    prompt offers a choice. Returns the source and its counts for the report."""
    from trainer.beliefs import choosing, function_beliefs

    choices = [p for p in prompts if choosing(p)]
    if settings.weight_function_fit == 0 or not choices:
        return None, {"prompts": len(choices)}
    from trainer.generate import Engine

    try:
        engine = Engine(Path(job.parent_path), dtype=settings.dtype_choice().dtype, log=say)
        fit = FunctionFit(function_beliefs(choices, engine, log=say), settings.function_fit_margin)
    except Exception as e:  # one source, not the cycle: a model or template it cannot score is said and skipped
        say(f"function fit: skipped this cycle: {type(e).__name__}: {e}")
        return None, {"prompts": len(choices), "error": f"{type(e).__name__}: {e}"}
    clear = sum(fit.favourite(p) is not None for p in choices)
    return fit, {"prompts": len(choices), "clear_favourite": clear, "margin": settings.function_fit_margin}


def gate_sources(sources: Sources) -> Sources:
    # User feedback speaks only of served answers, never of the gate's fresh ones.
    return {k: v for k, v in sources.items() if k != "feedback"}


def score(prompts: list[Prompt], pool: Pool, sources: Sources) -> Scored:
    out = {}
    for p in prompts:
        scores, detail = ensemble(sources, p, pool[p.prompt_id])
        out[p.prompt_id] = [ScoredCandidate(c, s, d) for c, s, d in zip(pool[p.prompt_id], scores, detail)]
    return out


def save_stage_outputs(cycle_dir: Path, scored: Scored, pairs: list[Pair]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cand_rows = [{"prompt_id": pid, "strategy": s.candidate.strategy,
                  "text": answer_text(s.candidate.text, s.candidate.tool_calls), "score": s.score,
                  "scores": json.dumps(s.detail)} for pid, items in scored.items() for s in items]
    pq.write_table(pa.Table.from_pylist(cand_rows, schema=pa.schema(
        [("prompt_id", pa.string()), ("strategy", pa.string()), ("text", pa.string()), ("score", pa.float64()),
         ("scores", pa.string())])), cycle_dir / "candidates.parquet")
    pair_rows = [{"prompt_id": p["prompt_id"], "prompt": json.dumps(p["prompt"]),
                  "chosen": answer_text(p["chosen"], p.get("chosen_calls")),
                  "rejected": answer_text(p["rejected"], p.get("rejected_calls")), "margin": p["margin"]} for p in pairs]
    pq.write_table(pa.Table.from_pylist(pair_rows, schema=pa.schema(
        [("prompt_id", pa.string()), ("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
         ("margin", pa.float64())])), cycle_dir / "pairs.parquet")


def select(settings: WorkerSettings, job: CycleJob) -> Selection:
    """New prompts (+ replay), deduplicated, scrubbed, capped per tenant, split train / held-out."""
    return select_prompts(Path(job.snapshot), job.since, limit=settings.max_prompts,
                          replay_fraction=settings.replay_fraction, tenant_cap=settings.tenant_cap,
                          holdout_fraction=settings.holdout_fraction,
                          near_dup_threshold=settings.near_dup_threshold, seed=settings.split_seed,
                          heldout_limit=settings.gate_max_prompts)


def reward_summary(scored: Scored) -> dict[str, float | None]:
    """Mean reward over all scored candidates, and mean of each prompt's best."""
    all_scores = [s.score for v in scored.values() for s in v if s.score is not None]
    return {"mean": round(sum(all_scores) / len(all_scores), 4) if all_scores else None,
            "mean_best": round(sum(max((s.score for s in v if s.score is not None), default=0)
                                   for v in scored.values()) / len(scored), 4) if scored else None}


def opinions(scored: Scored, sources: Sources) -> dict[str, int]:
    """How many prompts each source judged (an opinion on at least one candidate): a source
    that judges nothing in real traffic is visible in every report."""
    counts = dict.fromkeys((n for n, (w, _) in sources.items() if w > 0), 0)
    for items in scored.values():
        for name in {n for s in items for n in s.detail}:
            counts[name] = counts.get(name, 0) + 1
    return counts


def optimize(settings: WorkerSettings, job: CycleJob, pairs: list[Pair], sources: Sources,
             weights: Path) -> dict:
    """Train on top of the parent (DPO plus NLL on the chosen answer by default, with a LoRA)
    and write the merged, servable model to `weights`; returns the training figures."""
    from trainer.optimize import train  # torch/trl load only when there is something to train

    options = {"epochs": settings.epochs, "lr": settings.learning_rate, "lora_r": settings.lora_r,
               "seed": settings.seed, "log": say}
    if settings.optimizer in ("dpo", "dpo_nll"):
        options["beta"] = settings.beta

    def grpo_reward(messages: list[dict], answers: list[str]) -> list[float | None]:
        scores, _ = ensemble(gate_sources(sources), Prompt("grpo", messages), [Candidate(a, "grpo") for a in answers])
        return scores

    replay = []
    if settings.replay_general and settings.optimizer in ("dpo_nll", "sft"):
        # The parent's own answers to general prompts, NLL only: what it could do, it keeps doing.
        replay = replay_pairs(Path(job.parent_path), settings.replay_general, dtype=settings.dtype_choice().dtype,
                              cache_dir=settings.gate_cache(), seed=job.parent,
                              log=say)
    say(f"optimize: {settings.optimizer} on {len(pairs)} pairs + {len(replay)} replayed general prompts")
    weights.parent.mkdir(parents=True, exist_ok=True)  # the version directory; train() writes weights/ once
    return {"method": settings.optimizer, "replay": len(replay),
            **train(settings.optimizer, Path(job.parent_path), pairs + replay, weights, reward_fn=grpo_reward,
                    **options)}


def gate(settings: WorkerSettings, job: CycleJob, weights: Path, heldout: list[Prompt],
         sources: Sources) -> GateResult:
    """The candidate must beat the live model on held-out prompts and be non-inferior to it and
    to the base on the probe suite (trainer/gate.py). A candidate that is better on held-out
    traffic but fails elsewhere is interpolated toward its parent (TAO_GATE_MIXES, largest
    first); the first mix that passes replaces `weights`."""
    if not settings.gate_enabled:
        return GateResult(promote=True, reasons=["gate disabled (TAO_GATE_ENABLED=false)"], win_rate=None)
    choice = settings.dtype_choice()
    say(f"gate: generating in {choice.dtype} ({choice.reason})")
    # `heldout` is at most TAO_GATE_MAX_PROMPTS (select caps it): generating on the CPU is what the gate costs.
    judge = Gate(Path(job.parent_path), settings.base_model, heldout,
                 gate_sources(sources), VERIFIERS, cache_dir=settings.gate_cache(),
                 margin=settings.gate_margin, confidence=settings.gate_confidence,
                 max_new_tokens=settings.gate_max_tokens, dtype=choice.dtype, seed=settings.seed or 0,
                 probe_samples=settings.gate_probe_samples, probe_temperature=settings.gate_probe_temperature,
                 heldout_samples=settings.gate_heldout_samples, log=say).judge
    verdict = judge(weights)
    tries = [_try(1.0, verdict)]
    for alpha in sorted((a for a in settings.gate_mixes if a < 1), reverse=True):
        if verdict.promote or not verdict.heldout_better:
            break  # passed, or no better where it was trained: a mix toward the parent will not be either
        mix_dir = weights.with_name(f"weights-mix-{alpha:g}")
        say(f"gate: trying {alpha:g} x candidate + {1 - alpha:g} x parent")
        try:
            interpolate(Path(job.parent_path), weights, mix_dir, alpha)
            mixed = judge(mix_dir)
        except Exception as e:  # a mix that cannot be judged is a failed try, not a failed cycle
            shutil.rmtree(mix_dir, ignore_errors=True)
            tries.append({"mix": alpha, "promote": False, "reasons": [f"could not judge: {type(e).__name__}: {e}"]})
            say(f"gate: the {alpha:g} mix could not be judged: {type(e).__name__}: {e}")
            break
        tries.append(_try(alpha, mixed))
        if mixed.promote:
            # Aside, in, then away: at no moment is weights/ missing or half the old model.
            trained = weights.with_name("weights-trained")
            weights.rename(trained)
            mix_dir.rename(weights)
            shutil.rmtree(trained)
            verdict, verdict.mix = mixed, alpha
        else:
            shutil.rmtree(mix_dir)
    verdict.tries = tries
    return verdict


def _try(alpha: float, v: GateResult) -> dict:
    return {"mix": alpha, "promote": v.promote, "reasons": v.reasons, "win_rate": v.win_rate,
            "probes_vs_parent": (v.probes.get("vs_parent") or {}).get("value"),
            "probes_vs_base": (v.probes.get("vs_base") or {}).get("value")}


def export_adapter(settings: WorkerSettings, weights: Path, version_dir: Path) -> dict:
    """Gateways in lora mode serve a version as an adapter on the base model."""
    from trainer.adapter import extract_adapter

    report = extract_adapter(settings.base_model, weights, version_dir / "adapter", rank=settings.lora_max_rank)
    say(f"adapter: {json.dumps(report)}")
    return report


def version_metadata(settings: WorkerSettings, job: CycleJob, res: CycleResult, weights: Path,
                     verdict: GateResult) -> VersionMetadata:
    """The version's metadata.json (schemas.registry): what it is, where from, with which figures."""
    figures = {**(res.train or {}), "mean_reward": (res.reward or {}).get("mean") or 0,
               "gate_win_rate": verdict.win_rate}
    metrics = {k: float(v) for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    adapter = str((weights.parent / "adapter").resolve()) if res.adapter is not None else None
    return VersionMetadata(version=job.version, artifact_path=str(weights.resolve()), swap_mode=settings.swap_mode,
                           adapter_path=adapter, parent=job.parent, cycle_id=job.cycle_id,
                           status="promoted" if verdict.promote else "rejected", metrics=metrics,
                           counts=res.counts, reward=res.reward, train=res.train, gate=verdict.as_dict(),
                           timings=res.timings)


# -- the recipe -------------------------------------------------------------------------
def run_cycle(settings: WorkerSettings, job: CycleJob, cycle_dir: Path) -> CycleResult:
    stages = Stages(say)
    res = CycleResult(cycle_id=job.cycle_id, status="skipped", parent=job.parent, watermark=job.since)
    res.timings = stages.timings  # the same dict (validation copied it): each stage lands in the result

    with stages("select"):
        sel = select(settings, job)
    prompts = sel.train
    res.watermark, res.select = sel.watermark or job.since, sel.stats
    res.counts.update(prompts=len(prompts), heldout=len(sel.heldout))
    say(f"select: {len(prompts)} training prompts, {len(sel.heldout)} held out ({json.dumps(sel.stats)})")
    if not prompts:
        return _end(res, stages, "skipped", "no new prompts since the last cycle")

    with stages("reward_model"):  # the reward sources, with a reward model fit on users' feedback
        reward_model, res.reward_model = fit_reward_model(prompts, settings)
    with stages("function_fit"):  # which offered function the live model itself would call
        fit, res.function_fit = function_fit(settings, job, prompts)
    if fit is not None:
        say(f"function fit: {res.function_fit['clear_favourite']} of {res.function_fit['prompts']} prompts offering "
            f"a choice of tools have a clear favourite (margin {settings.function_fit_margin:g} nats)")
    sources = reward_sources(settings, reward_model, fit)
    say(f"reward sources: {', '.join(n for n, (w, _) in sources.items() if w > 0)}"
        + (f"; reward model {res.reward_model}" if res.reward_model else ""))

    with stages("explore"):  # several strategies per prompt on the live model; served answers join
        pool = explore_all(prompts, settings, sources)
    res.counts["candidates"] = sum(len(v) for v in pool.values())

    with stages("score"):  # without labels; pairs of best against worst on the bare prompt
        scored = score(prompts, pool, sources)
        pairs = build_pairs(prompts, scored, settings.min_margin, settings.min_best)
    save_stage_outputs(cycle_dir, scored, pairs)
    res.counts.update(scored=sum(s.score is not None for v in scored.values() for s in v), pairs=len(pairs))
    res.reward, res.opinions = reward_summary(scored), opinions(scored, sources)
    say(f"score: {res.counts['scored']} candidates scored, mean reward {res.reward['mean']}, {len(pairs)} pairs; "
        f"prompts judged per source: {json.dumps(res.opinions)}")
    if len(pairs) < settings.min_pairs:
        return _end(res, stages, "skipped", f"only {len(pairs)} pairs (TAO_MIN_PAIRS={settings.min_pairs}): "
                                            "nothing to train")

    version_dir = settings.data_dir / "models" / job.version
    weights = version_dir / "weights"
    with stages("optimize"):
        res.train = optimize(settings, job, pairs, sources, weights)

    with stages("gate"):
        verdict = gate(settings, job, weights, sel.heldout, sources)
    # The live model may have changed while this cycle ran (the live canary rolled the parent
    # back, or someone promoted another version): a child of a version no longer live must not
    # bring that version's weights back.
    live = live_version(settings.data_dir)
    if verdict.promote and live != job.parent:
        verdict.promote = False
        verdict.reasons.append(f"the parent {job.parent} is no longer live ({live} is): not published")
    res.gate = verdict.as_dict()
    say(f"gate: {'promote' if verdict.promote else 'reject'}: {'; '.join(verdict.reasons)}")

    # Publish: the version directory is complete (metadata last) before anyone hears of it.
    if verdict.promote and settings.swap_mode == "lora":
        with stages("adapter"):
            res.adapter = export_adapter(settings, weights, version_dir)
    meta = version_metadata(settings, job, res, weights, verdict)
    write_metadata(version_dir, meta)
    if verdict.promote:
        with stages("publish"):
            publish_promoted(settings.kafka_bootstrap, meta.promoted_payload(), key=settings.signing_key_bytes(),
                             data_dir=settings.data_dir)
    res.version = job.version
    return _end(res, stages, meta.status, None if verdict.promote else "; ".join(verdict.reasons))


def _end(res: CycleResult, stages: Stages, status: Status, reason: str | None) -> CycleResult:
    res.status, res.reason = status, reason
    total = stages.total()
    say(f"{status} {res.version or ''} (parent {res.parent}) in {total:.0f}s" + (f": {reason}" if reason else ""))
    return res


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
    try:
        job = CycleJob.model_validate_json((cycle_dir / "job.json").read_text())
        settings = WorkerSettings.model_validate_json((cycle_dir / "settings.json").read_text())
        result = run_cycle(settings, job, cycle_dir)
    except Exception as e:  # recorded, not swallowed: the worker marks the cycle failed
        import traceback

        traceback.print_exc()
        result = CycleResult(cycle_id=cycle_dir.name, status="failed", reason=f"{type(e).__name__}: {e}")
    tmp = cycle_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result.as_dict(), indent=2))
    tmp.rename(cycle_dir / "result.json")
    return 0 if result.status != "failed" else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
