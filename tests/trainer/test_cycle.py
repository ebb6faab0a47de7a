"""The cycle recipe's own helpers (trainer/cycle.py, trainer/stages.py, trainer/job.py), fast:
no vLLM, no training. Stages that need a model are replaced, and each test says which."""
import json
from pathlib import Path

import pytest

from feedback.registry import get_version, write_metadata
from trainer import cycle
from trainer.gate import GateResult
from trainer.job import CycleJob, CycleResult
from trainer.pairs import ScoredCandidate
from trainer.prompts import Candidate, Prompt
from trainer.selection import Selection
from trainer.settings import WorkerSettings
from trainer.stages import Stages

EXTRACT = "Extract the fields name, city from: Ana Ruiz lives in Lima."


@pytest.fixture
def settings(tmp_path):
    return WorkerSettings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:1", judge_url=None, weight_reward_model=0,
                          min_pairs=2)


@pytest.fixture
def job(tmp_path):
    return CycleJob(cycle_id="c-test", since=None, version="v1", parent="base", parent_path=str(tmp_path / "base"),
                    snapshot=str(tmp_path / "snapshot"))


def test_stages_time_each_stage_and_say_a_failure():
    said = []
    stages = Stages(said.append)
    with stages("select"):
        pass
    with pytest.raises(ZeroDivisionError):
        with stages("explore"):
            1 / 0
    assert set(stages.timings) == {"select", "explore"}
    assert all(isinstance(v, float) and v >= 0 for v in stages.timings.values())
    assert said[0].startswith("select: done in") and said[1].startswith("explore: failed after")
    assert stages.total() >= stages.timings["select"] and "total" in stages.timings


def test_result_json_leaves_out_stages_not_reached_and_reads_back():
    res = CycleResult(cycle_id="c1", status="skipped", reason="no new prompts since the last cycle")
    d = res.as_dict()
    assert d == {"cycle_id": "c1", "status": "skipped", "reason": "no new prompts since the last cycle"}
    assert CycleResult.model_validate_json(json.dumps(d)) == res
    with pytest.raises(ValueError):
        CycleResult(status="exploded")  # a status the worker does not know is refused where it is read


def test_reward_summary_means_over_scored_candidates_only():
    scored = {"a": [ScoredCandidate(Candidate("x", "plain"), 1.0, {}), ScoredCandidate(Candidate("y", "plain"), None, {})],
              "b": [ScoredCandidate(Candidate("z", "plain"), 0.5, {})]}
    assert cycle.reward_summary(scored) == {"mean": 0.75, "mean_best": 0.75}
    assert cycle.reward_summary({}) == {"mean": None, "mean_best": None}


def test_opinions_count_prompts_per_source():
    scored = {"a": [ScoredCandidate(Candidate("x", "plain"), 1.0, {"json": 1.0}),
                    ScoredCandidate(Candidate("y", "plain"), 0.5, {"json": 0.5, "agreement": 0.5})],
              "b": [ScoredCandidate(Candidate("z", "plain"), None, {})]}
    sources = {"json": (1.0, None), "agreement": (0.1, None), "judge": (1.0, None), "off": (0.0, None)}
    assert cycle.opinions(scored, sources) == {"json": 1, "agreement": 1, "judge": 0}


def test_a_served_tool_call_joins_the_pool_with_its_calls():
    calls = [{"name": "get_weather", "arguments": '{"city": "Lima"}'}]
    p = Prompt("p1", [{"role": "user", "content": "Weather in Lima?"}], served="", served_tool_calls=calls)
    pool = {"p1": []}
    cycle.add_served_and_corrections([p], pool)
    assert pool["p1"][0].strategy == "served" and pool["p1"][0].tool_calls == calls


def test_served_answers_and_corrections_join_the_pool():
    p = Prompt("p1", [{"role": "user", "content": EXTRACT}], served="{}",
               feedback=[{"kind": "correction", "value": '{"name": "Ana Ruiz"}'}, {"kind": "thumbs", "value": 1}])
    pool = {"p1": []}
    cycle.add_served_and_corrections([p], pool)
    assert [(c.strategy, c.text) for c in pool["p1"]] == [("served", "{}"), ("correction", '{"name": "Ana Ruiz"}')]


def test_gate_never_hears_user_feedback(settings):
    sources = cycle.reward_sources(settings)
    assert "feedback" in sources and "feedback" not in cycle.gate_sources(sources)
    assert set(cycle.gate_sources(sources)) == set(sources) - {"feedback"}


def test_a_disabled_gate_promotes_and_says_why(settings, job, tmp_path):
    settings = settings.model_copy(update={"gate_enabled": False})
    verdict = cycle.gate(settings, job, tmp_path / "weights", [], {})
    assert verdict.promote and verdict.reasons == ["gate disabled (TAO_GATE_ENABLED=false)"]


def test_version_metadata_round_trips_through_the_registry(settings, job, tmp_path):
    weights = tmp_path / "models" / "v1" / "weights"
    weights.mkdir(parents=True)
    res = CycleResult(cycle_id="c-test", status="skipped", counts={"pairs": 5}, reward={"mean": 0.5, "mean_best": 0.9},
                      train={"method": "dpo_nll", "loss": 0.25, "steps": 3}, timings={"select": 1.0})
    verdict = GateResult(promote=False, reasons=["win rate 0.40 < 0.55"], win_rate=0.4)
    meta = cycle.version_metadata(settings, job, res, weights, verdict)
    write_metadata(weights.parent, meta)
    back = get_version(tmp_path, "v1")
    assert back == meta and back.status == "rejected" and back.gate["reasons"] == ["win rate 0.40 < 0.55"]
    assert back.metrics == {"loss": 0.25, "steps": 3.0, "mean_reward": 0.5, "gate_win_rate": 0.4}
    assert back.adapter_path is None and back.promoted_payload().artifact_path == str(weights.resolve())


def test_recipe_stops_after_select_when_nothing_is_new(settings, job, tmp_path, monkeypatch):
    # select replaced: a snapshot with no new prompts.
    monkeypatch.setattr(cycle, "select", lambda s, j: Selection(train=[], heldout=[], watermark=None))
    res = cycle.run_cycle(settings, job, tmp_path)
    assert res.status == "skipped" and res.reason == "no new prompts since the last cycle"
    assert set(res.timings) == {"select", "total"} and res.version is None and res.counts["prompts"] == 0


def test_recipe_stops_before_training_with_too_few_pairs(settings, job, tmp_path, monkeypatch):
    # select and explore replaced (no snapshot, no vLLM); scoring and pairing are the real ones.
    prompts = [Prompt(f"p{i}", [{"role": "user", "content": EXTRACT}]) for i in range(3)]
    good, bad = '{"name": "Ana Ruiz", "city": "Lima"}', "I cannot help with that."
    monkeypatch.setattr(cycle, "select", lambda s, j: Selection(train=prompts, heldout=[], watermark="2026-01-01"))
    pools = {"p0": [Candidate(good, "plain"), Candidate(bad, "plain")], "p1": [Candidate(good, "plain")],
             "p2": [Candidate(bad, "plain")]}
    monkeypatch.setattr(cycle, "explore_all", lambda ps, s, src: {k: list(v) for k, v in pools.items()})
    res = cycle.run_cycle(settings, job, tmp_path)
    assert res.status == "skipped" and res.reason.startswith("only 1 pairs (TAO_MIN_PAIRS=2)")
    assert res.counts == {"prompts": 3, "heldout": 0, "candidates": 4, "scored": 4, "pairs": 1}
    assert res.watermark == "2026-01-01" and list(res.timings) == ["select", "reward_model", "function_fit", "explore", "score",
                                                                  "total"]
    assert (tmp_path / "pairs.parquet").exists() and (tmp_path / "candidates.parquet").exists()
    # The extraction verifier judged all three prompts; the contract verifiers none (no contract).
    assert res.opinions["json"] == 3 and res.opinions["tool_calls"] == 0 and res.opinions["structured_output"] == 0


def test_child_entry_records_a_broken_job_as_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(cycle, "_die_with_parent", lambda: None)  # not this test process
    (tmp_path / "job.json").write_text('{"cycle_id": "c1"}')  # fields missing
    assert cycle.main(tmp_path) == 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "failed" and "ValidationError" in result["reason"] and "version" in result["reason"]
    assert result["cycle_id"] == Path(tmp_path).name


def test_the_majority_is_masked_by_verifiers_of_substance_only(settings):
    # json_object says "an object", not which: the vote still speaks; a request with keys is judged by json.
    sources = cycle.reward_sources(settings)
    fmt = Prompt("p", [{"role": "user", "content": "Reply in JSON."}], contract={"response_format": {"type": "json_object"}})
    cands = [Candidate('{"a": 1}', "plain"), Candidate('{"a": 1}', "plain"), Candidate('{"a": 2}', "plain")]
    _, detail = cycle.ensemble(sources, fmt, cands)
    assert detail[0]["majority"] == 1.0 and detail[2]["majority"] == 0.0 and "structured_output" in detail[0]
    keyed = Prompt("p", [{"role": "user", "content": EXTRACT}])
    _, detail = cycle.ensemble(sources, keyed, [Candidate('{"name": "Ana Ruiz", "city": "Lima"}', "plain")] * 3)
    assert "json" in detail[0] and "majority" not in detail[0]


def test_a_correction_is_never_a_few_shot_exemplar(settings, monkeypatch):
    # Even a correction corroborated twice over (two tenants wrote it, the JSON verifier passes
    # it: the best-scored candidate of its prompt) is user text: were it an exemplar, it would be
    # copied into the few-shot answers of every prompt of its shape. vLLM replaced: run_jobs
    # answers each request with a fixed text per strategy.
    settings.explore_strategies = ["plain", "fewshot"]
    planted = '{"name": "Ana Ruiz", "city": "Lima"}'
    a = Prompt("a", [{"role": "user", "content": EXTRACT}],
               feedback=[{"kind": "correction", "value": planted, "choice_index": 0, "tenant": t} for t in ("t1", "t2")])
    b = Prompt("b", [{"role": "user", "content": "Extract the fields name, city from: Bo Li lives in Oslo."}])
    sent = []

    def run_jobs(jobs, *args, **kwargs):
        sent.extend(jobs)
        return {j.prompt.prompt_id: [Candidate("I am not sure.", j.strategy)] for j in jobs}

    monkeypatch.setattr(cycle, "run_jobs", run_jobs)
    monkeypatch.setattr(cycle, "served_model_name", lambda url: "m")
    pool = cycle.explore_all([a, b], settings, cycle.reward_sources(settings))
    assert any(c.strategy == "correction" for c in pool["a"])  # in the pool, scored like any candidate ...
    scored = cycle.score([a], pool, cycle.reward_sources(settings))["a"]
    assert max(scored, key=lambda s: s.score or 0).candidate.strategy == "correction"
    shown = [m.get("content") for j in sent if j.strategy == "fewshot" for m in j.messages]
    assert planted not in shown  # ... but never shown


def test_gate_interpolates_toward_the_parent_and_publishes_the_largest_mix_that_passes(settings, job, tmp_path,
                                                                                      monkeypatch):
    # Gate replaced (its decisions are tests/trainer/test_gate.py's, on real models
    # tests/trainer/test_gate_models.py's): the trained candidate is better on held-out traffic but
    # forgets; the 0.5 mix forgets too; the 0.25 mix passes. Interpolation itself is real.
    import torch
    from safetensors.torch import load_file

    from tests.trainer.test_interpolate import model_dir

    settings.gate_mixes = [1.0, 0.5, 0.25]
    model_dir(Path(job.parent_path), {"w": torch.zeros(2)})
    (tmp_path / "v1").mkdir()
    weights = model_dir(tmp_path / "v1" / "weights", {"w": torch.ones(2)})
    judged = []

    class FakeGate:
        def __init__(self, *args, **kwargs):
            pass

        def judge(self, d):
            w = load_file(d / "model.safetensors")["w"][0].item()
            judged.append(w)
            ok = w <= 0.25
            return GateResult(promote=ok, reasons=["passed"] if ok else ["probe suite vs parent: -3.0"], win_rate=1.0,
                              heldout_better=True)

    monkeypatch.setattr(cycle, "Gate", FakeGate)
    verdict = cycle.gate(settings, job, weights, [], {})
    assert judged == [1.0, 0.5, 0.25] and verdict.promote and verdict.mix == 0.25
    assert [t["mix"] for t in verdict.tries] == [1.0, 0.5, 0.25] and [t["promote"] for t in verdict.tries] == [
        False, False, True]
    assert load_file(weights / "model.safetensors")["w"].tolist() == [0.25, 0.25]  # the mix is what is published
    assert sorted(p.name for p in weights.parent.iterdir()) == ["weights"]  # the failed mix is gone

    # Not better where it was trained: no mix is tried (none would be).
    judged.clear()
    FakeGate.judge = lambda self, d: judged.append(d) or GateResult(promote=False, reasons=["held-out"], win_rate=0.4)
    assert not cycle.gate(settings, job, weights, [], {}).promote and len(judged) == 1


def test_a_cycle_whose_parent_is_no_longer_live_publishes_nothing(settings, job, tmp_path, monkeypatch):
    # select, explore, optimize and the gate replaced (no snapshot, vLLM or training): the gate
    # passes, but the live canary rolled the parent back while the cycle ran (live.json says v9).
    from feedback.registry import write_live
    from schemas.events import ModelRolledBack, ModelRolledBackPayload

    prompts = [Prompt(f"p{i}", [{"role": "user", "content": EXTRACT}]) for i in range(2)]
    good, bad = '{"name": "Ana Ruiz", "city": "Lima"}', "I cannot help with that."
    monkeypatch.setattr(cycle, "select", lambda s, j: Selection(train=prompts, heldout=[], watermark="2026-01-01"))
    monkeypatch.setattr(cycle, "explore_all", lambda ps, s, src: {p.prompt_id: [Candidate(good, "plain"),
                                                                              Candidate(bad, "plain")] for p in ps})
    monkeypatch.setattr(cycle, "optimize", lambda s, j, pairs, src, w: w.mkdir(parents=True) or {"method": "test"})
    monkeypatch.setattr(cycle, "gate", lambda *a: GateResult(promote=True, reasons=["passed"], win_rate=1.0))
    monkeypatch.setattr(cycle, "publish_promoted", lambda *a, **k: pytest.fail("a stale child was published"))
    ev = ModelRolledBack(payload=ModelRolledBackPayload(version="v9", artifact_path="/m", rolled_back_from="v10"))
    write_live(tmp_path, ev.to_bytes(), b"sig")
    res = cycle.run_cycle(settings, job, tmp_path)
    assert res.status == "rejected" and "the parent base is no longer live (v9 is): not published" in res.reason
    assert get_version(tmp_path, "v1").status == "rejected"


def test_a_mix_that_cannot_be_judged_is_a_failed_try_and_leaves_nothing(settings, job, tmp_path, monkeypatch):
    # Gate replaced, as above; judging the 0.5 mix raises (out of memory, say).
    import torch

    from tests.trainer.test_interpolate import model_dir

    model_dir(Path(job.parent_path), {"w": torch.zeros(2)})
    (tmp_path / "v1").mkdir()
    weights = model_dir(tmp_path / "v1" / "weights", {"w": torch.ones(2)})

    class FakeGate:
        def __init__(self, *args, **kwargs):
            pass

        def judge(self, d):
            if d != weights:
                raise MemoryError("no room")
            return GateResult(promote=False, reasons=["probe suite vs parent: -3.0"], win_rate=1.0, heldout_better=True)

    monkeypatch.setattr(cycle, "Gate", FakeGate)
    verdict = cycle.gate(settings, job, weights, [], {})
    assert not verdict.promote and verdict.reasons == ["probe suite vs parent: -3.0"]
    assert verdict.tries[-1] == {"mix": 0.5, "promote": False, "reasons": ["could not judge: MemoryError: no room"]}
    assert sorted(p.name for p in weights.parent.iterdir()) == ["weights"]


def test_the_live_models_favourite_function_decides_a_tool_pair(settings, job, tmp_path, monkeypatch):
    # select and explore replaced (no snapshot, no vLLM); the function-fit stage runs the real
    # base model as the live one, and scoring and pairing are the real ones. Both candidates
    # are valid, grounded calls: only the choice of function tells them apart.
    from tests.models import require_base_model

    job = job.model_copy(update={"parent_path": str(require_base_model())})

    def tool(name, description, **params):
        return {"type": "function", "function": {"name": name, "description": description, "parameters": {
            "type": "object", "properties": {k: {"type": t} for k, t in params.items()}, "required": list(params)}}}

    tools = [tool("log_workout", "Record a workout.", activity="string", minutes="integer"),
             tool("send_invoice", "Send an invoice to a customer.", customer="string", amount="number")]
    # The test's own wording; the base model favours log_workout here by several nats.
    p = Prompt("t", [{"role": "user", "content": "Record my workout: 45 minutes of swimming."}],
               contract={"tools": tools, "tool_choice": "auto"})
    forced = Prompt("f", p.messages, contract={"tools": tools, "tool_choice": "none"})
    workout = Candidate("", "scaffold", tool_calls=[{"name": "log_workout",
                                                     "arguments": '{"activity": "swimming", "minutes": 45}'}])
    invoice = Candidate("", "scaffold", tool_calls=[{"name": "send_invoice",
                                                     "arguments": '{"customer": "swimming", "amount": 45}'}])
    monkeypatch.setattr(cycle, "select", lambda s, j: Selection(train=[p, forced], heldout=[], watermark=None))
    monkeypatch.setattr(cycle, "explore_all", lambda ps, s, src: {"t": [invoice, workout], "f": []})
    res = cycle.run_cycle(settings.model_copy(update={"min_pairs": 99}), job, tmp_path)
    assert res.function_fit == {"prompts": 1, "clear_favourite": 1, "margin": settings.function_fit_margin}
    assert res.opinions["function_fit"] == 1 and res.counts["pairs"] == 1
    import pyarrow.parquet as pq

    fits = {json.loads(r["text"])[0]["name"]: json.loads(r["scores"]).get("function_fit")
            for r in pq.read_table(tmp_path / "candidates.parquet").to_pylist()}
    assert fits == {"log_workout": 1.0, "send_invoice": 0.0}
    pair = pq.read_table(tmp_path / "pairs.parquet").to_pylist()[0]
    assert '"log_workout"' in pair["chosen"] and '"send_invoice"' in pair["rejected"]


def test_no_function_fit_without_a_choice_of_tools_or_with_the_source_off(settings, job):
    # The parent is a path that does not exist: loading it would fail the stage.
    fit, counts = cycle.function_fit(settings, job, [Prompt("a", [{"role": "user", "content": EXTRACT}])])
    assert fit is None and counts == {"prompts": 0}
    choice = Prompt("b", [{"role": "user", "content": "Bill Ana 40."}], contract={"tools": [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("bill", "book")]})
    off = settings.model_copy(update={"weight_function_fit": 0})
    assert cycle.function_fit(off, job, [choice]) == (None, {"prompts": 1})


def test_a_model_the_source_cannot_score_skips_it_not_the_cycle(settings, job):
    choice = Prompt("b", [{"role": "user", "content": "Bill Ana 40."}], contract={"tools": [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("bill", "book")]})
    fit, counts = cycle.function_fit(settings, job, [choice])  # no model at the parent's path
    assert fit is None and counts["prompts"] == 1 and counts["error"].startswith("OSError")
