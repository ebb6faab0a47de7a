"""One TAO cycle, as a recipe: select -> explore -> score -> pairs -> optimize -> publish.

Runs in a child process of the worker (`python -m trainer.cycle CYCLE_DIR`), reading a
Parquet snapshot the worker exported (never the DuckDB file) and writing everything it
produces into CYCLE_DIR: candidates.parquet, pairs.parquet, result.json. The worker loads
those into DuckDB afterwards. A new model version lands in DATA_DIR/models/VERSION.

Not yet here (see the issues): the gate against the current model, near-duplicate
removal, PII scrubbing, replay of older prompts, judge and reward-model sources.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from schemas.events import ModelPromotedPayload
from trainer.explore import explore, served_model_name
from trainer.pairs import ScoredCandidate, build_pairs
from trainer.publish import publish_promoted, write_metadata
from trainer.rewards import Candidate, Prompt, ensemble, json_verifier, user_feedback
from trainer.settings import WorkerSettings


def say(msg: str) -> None:
    print(f"[cycle {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- stages -----------------------------------------------------------------------------
def select(snapshot: Path, since: str | None, limit: int) -> tuple[list[Prompt], str | None]:
    """New logged prompts since the last cycle, exact duplicates removed, with their feedback."""
    import duckdb

    con = duckdb.connect()
    comp, fb = snapshot / "completions.parquet", snapshot / "feedback.parquet"
    rows = con.execute(
        f"""SELECT completion_id, CAST(messages AS VARCHAR), task, response, CAST(occurred_at AS VARCHAR)
            FROM read_parquet('{comp}') WHERE ? IS NULL OR occurred_at > CAST(? AS TIMESTAMPTZ)
            ORDER BY occurred_at""",
        [since, since],
    ).fetchall()
    feedback: dict[str, list[dict]] = {}
    if fb.exists():
        for cid, kind, value, idx in con.execute(
            f"SELECT completion_id, kind, CAST(value AS VARCHAR), choice_index FROM read_parquet('{fb}') "
            "ORDER BY occurred_at"
        ).fetchall():
            feedback.setdefault(cid, []).append({"kind": kind, "value": json.loads(value), "choice_index": idx})
    seen, prompts, watermark = set(), [], None
    for cid, messages, task, response, occurred in rows:
        watermark = occurred
        if messages in seen:
            continue
        seen.add(messages)
        p = Prompt(cid, json.loads(messages), task, feedback.get(cid, []))
        p.served = response  # type: ignore[attr-defined]
        prompts.append(p)
    return prompts[-limit:], watermark


def add_served_and_corrections(prompts: list[Prompt], pool: dict[str, list[Candidate]]) -> None:
    """The answer users actually got, and any correction they wrote, join the pool."""
    for p in prompts:
        if getattr(p, "served", None):
            pool[p.prompt_id].append(Candidate(p.served, "served"))
        for fb in p.feedback:
            if fb["kind"] == "correction":
                pool[p.prompt_id].append(Candidate(str(fb["value"]), "correction"))


def score(prompts: list[Prompt], pool: dict[str, list[Candidate]],
          settings: WorkerSettings) -> dict[str, list[ScoredCandidate]]:
    sources = {"verifier": (settings.weight_verifier, json_verifier),
               "feedback": (settings.weight_feedback, user_feedback)}
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

    t = time.monotonic()
    prompts, watermark = select(Path(job["snapshot"]), job["since"], settings.max_prompts)
    result["watermark"] = watermark or job["since"]
    result["counts"]["prompts"] = len(prompts)
    stage_done("select", t)
    say(f"select: {len(prompts)} new prompts")
    if not prompts:
        return {**result, "reason": "no new prompts since the last cycle"}

    t = time.monotonic()
    model = served_model_name(settings.explore_url)
    pool = explore(prompts, settings.explore_url, model, settings.samples_per_strategy, settings.explore_max_tokens,
                   settings.explore_concurrency,
                   progress=lambda d, n: (d % max(1, n // 10) == 0 or d == n) and say(f"explore: {d}/{n} requests"))
    add_served_and_corrections(prompts, pool)
    stage_done("explore", t)
    result["counts"]["candidates"] = sum(len(v) for v in pool.values())

    t = time.monotonic()
    scored = score(prompts, pool, settings)
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

    from trainer.optimize import train_dpo  # torch/trl load only when there is something to train

    t = time.monotonic()
    version_dir = settings.data_dir / "models" / job["version"]
    version_dir.mkdir(parents=True, exist_ok=True)
    train = train_dpo(Path(job["parent_path"]), pairs, version_dir / "weights", epochs=settings.epochs,
                      lr=settings.learning_rate, beta=settings.beta, lora_r=settings.lora_r, log=say)
    stage_done("optimize", t)
    result["train"] = train

    # Publish: the version directory is complete (metadata last) before anyone hears of it.
    metrics = {k: float(v) for k, v in {**train, "pairs": len(pairs),
                                        "mean_reward": result["reward"]["mean"] or 0}.items()
               if isinstance(v, (int, float))}
    payload = ModelPromotedPayload(version=job["version"], artifact_path=str((version_dir / "weights").resolve()),
                                   swap_mode="weights", parent=job["parent"], cycle_id=job["cycle_id"],
                                   metrics=metrics)
    write_metadata(version_dir, {**payload.model_dump(), "counts": result["counts"], "timings": timings,
                                 "gate": "none yet: promoted without a gate"})
    t = time.monotonic()
    publish_promoted(settings.kafka_bootstrap, payload)
    stage_done("publish", t)
    timings["total"] = round(time.monotonic() - t0, 2)
    say(f"published {job['version']} (parent {job['parent']}) in {timings['total']:.0f}s")
    return {**result, "status": "promoted", "version": job["version"], "reason": None}


def main(cycle_dir: Path) -> int:
    """Child-process entry: CYCLE_DIR holds job.json and settings.json written by the worker."""
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
