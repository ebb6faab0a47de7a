"""ConsoleData against a DuckDB file filled through the Store (as the collector writes it):
every figure recomputed here in Python from the events that were written."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from feedback.collector import CollectorCounters
from feedback.registry import write_metadata
from feedback.store import Store
from schemas.events import ModelPromoted, ModelPromotedPayload, ModelRolledBack, ModelRolledBackPayload
from schemas.registry import VersionMetadata
from tests.trainer.console.fill import fill
from trainer.console.data import ConsoleData
from trainer.stats import wilson


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "tao.duckdb")
    yield s
    s.close()


@pytest.fixture
def filled(store):
    return fill(store, 600, minutes=24 * 60, seed=3)


def data(store, tmp_path, **kw) -> ConsoleData:
    return ConsoleData(store, tmp_path, CollectorCounters().stats, **kw)


def test_traffic_by_tenant_and_shape(store, tmp_path, filled):
    t = data(store, tmp_path, tenant_names=lambda: {"acme": "Acme Inc"}).traffic(0)
    groups = defaultdict(list)
    for c in filled.completions:
        groups[(c.tenant, filled.shape[c.payload.completion_id])].append(c)
    assert t["total"] == len(filled.completions)
    assert {(r["tenant"], r["shape"]) for r in t["by_shape"]} == set(groups)
    for r in t["by_shape"]:
        cs = groups[(r["tenant"], r["shape"])]
        lat = [c.payload.latency_ms for c in cs]
        assert r["requests"] == len(cs)
        assert r["p50"] == pytest.approx(quantile(lat, 0.5), abs=0.0501)
        assert r["p99"] == pytest.approx(quantile(lat, 0.99), abs=0.0501)
        assert r["prompt_tokens"] == sum(c.payload.usage.prompt_tokens for c in cs)
        assert r["completion_tokens"] == sum(c.payload.usage.completion_tokens for c in cs)
        assert r["versions"] == ", ".join(sorted({c.payload.model_version for c in cs}))
        assert r["tenant_name"] == ("Acme Inc" if r["tenant"] == "acme" else r["tenant"][:12])
    versions = Counter(c.payload.model_version for c in filled.completions)
    assert {r["version"]: r["requests"] for r in t["by_version"]} == versions
    # The chart: per tenant, requests per minute in day-wide buckets, adding up to the total.
    assert sum(sum(s["values"]) * 1440 for s in t["chart"]["series"]) == pytest.approx(len(filled.completions), abs=0.01)


def test_the_window_leaves_older_traffic_out(store, tmp_path):
    now = datetime.now(timezone.utc)
    fill(store, 50, minutes=30, seed=1, now=now)
    fill(store, 70, minutes=60, seed=2, now=now - timedelta(hours=3))
    d = data(store, tmp_path)
    assert d.traffic(60)["total"] == 50
    assert d.traffic(1440)["total"] == d.traffic(0)["total"] == 120


def test_completions_search_filters_and_scrubs(store, tmp_path, filled):
    d = data(store, tmp_path)
    page = d.completions(limit=50)
    newest = sorted(filled.completions, key=lambda c: c.occurred_at, reverse=True)[:50]
    assert [r["completion_id"] for r in page["rows"]] == [c.payload.completion_id for c in newest]
    assert all("@example.com" not in r["prompt"] and "<EMAIL>" in r["prompt"] for r in page["rows"])
    # Older pages follow on from the last row's time, without overlap.
    older = d.completions(before=datetime.fromisoformat(page["next_before"]).replace(tzinfo=timezone.utc), limit=50)
    assert not {r["completion_id"] for r in older["rows"]} & {r["completion_id"] for r in page["rows"]}
    # Search matches the prompt text; tenant and version filter.
    target = filled.completions[123]
    hit = d.completions(q=f"Question {123}:")["rows"]
    assert [r["completion_id"] for r in hit] == [target.payload.completion_id]
    only = d.completions(tenant="globex", version="v1", limit=1000)["rows"]
    assert len(only) == sum(c.tenant == "globex" and c.payload.model_version == "v1" for c in filled.completions)
    # Feedback rides along with its completion.
    fb = defaultdict(list)
    for f in filled.feedback:
        fb[f.payload.completion_id].append(f.payload.kind.value)
    for r in d.completions(limit=1000)["rows"]:
        assert [x["kind"] for x in r["feedback"]] == fb.get(r["completion_id"], [])


def test_feedback_rates_per_version_with_intervals(store, tmp_path, filled):
    f = data(store, tmp_path).feedback(0)
    version = {c.payload.completion_id: c.payload.model_version for c in filled.completions}
    assert {r["kind"]: r["n"] for r in f["by_kind"]} == Counter(x.payload.kind.value for x in filled.feedback)
    thumbs = defaultdict(lambda: [0, 0])
    for x in filled.feedback:
        if x.payload.kind.value == "thumbs":
            thumbs[version[x.payload.completion_id]][0] += 1
            thumbs[version[x.payload.completion_id]][1] += x.payload.value == "down"
    assert {r["version"]: (r["rated"], r["down"]) for r in f["per_version"]} == {k: tuple(v) for k, v in thumbs.items()}
    for r in f["per_version"]:
        iv = wilson(r["down"], r["rated"])
        assert (r["low"], r["high"]) == (round(iv.low, 3), round(iv.high, 3))


def test_models_lineage_and_timeline(store, tmp_path):
    for v, parent, status in (("v1", "base", "promoted"), ("v2", "v1", "rejected")):
        (tmp_path / "models" / v).mkdir(parents=True)
        write_metadata(tmp_path / "models" / v, VersionMetadata(
            version=v, artifact_path=str(tmp_path / "models" / v / "weights"), parent=parent, cycle_id=f"c-{v}",
            status=status, counts={"prompts": 10, "pairs": 4}, reward={"mean_best": 0.7},
            gate={"win_interval": {"value": 0.8, "low": 0.6, "high": 0.9, "n": 10},
                  "probes": {"vs_parent": {"value": 0.01, "low": -0.005, "high": 0.02, "n": 200}}}))
    events = [ModelPromoted(payload=ModelPromotedPayload(version="v1", artifact_path="/m/v1", parent="base")),
              ModelRolledBack(payload=ModelRolledBackPayload(version="base", artifact_path="/m/base",
                                                             rolled_back_from="v1", reason="thumbs"))]
    store.write_batch([(e, e.to_bytes().decode()) for e in events], {})
    m = data(store, tmp_path).models()
    assert m["live"] == "base"
    assert [(e["type"], e["version"]) for e in m["events"]] == [("ModelPromoted", "v1"), ("ModelRolledBack", "base")]
    assert m["events"][1]["rolled_back_from"] == "v1" and m["events"][1]["reason"] == "thumbs"
    v1, v2 = m["versions"]
    assert (v1["version"], v1["verdict"], v1["rolled_back"], v1["live"]) == ("v1", "promoted", True, False)
    assert (v2["parent"], v2["verdict"], v2["promoted_at"]) == ("v1", "rejected", None)
    assert v1["win"]["low"] == 0.6 and v1["vs_parent"]["n"] == 200


def test_a_cycle_with_its_gate_examples(store, tmp_path, filled):
    ids = [c.payload.completion_id for c in filled.completions[:2]]
    report = {"status": "rejected", "timings": {"explore": 10.0, "gate": 5.0, "total": 15.5},
              "counts": {"prompts": 2}, "gate": {"promote": False, "reasons": ["held-out: not better"],
                                                 "examples": [{"prompt_id": ids[0], "verdict": "loss",
                                                               "current": "a@b.example.com", "candidate": "x",
                                                               "score_current": 1.0, "score_candidate": 0.0}]}}
    store.execute("INSERT INTO cycles VALUES ('c1', now() - INTERVAL 20 SECOND, now(), 'rejected', 'r', NULL, 'v1', ?)",
                  [json.dumps(report)])
    store.execute("INSERT INTO cycle_candidates VALUES ('c1', ?, 'plain', 'a', 0.5, NULL), ('c1', ?, 'plain', 'b', 1.0, "
                  "NULL), ('c1', ?, 'fewshot', 'c', NULL, NULL)", ids + ids[:1])
    store.execute("INSERT INTO cycle_pairs VALUES ('c1', ?, ?, 'good', 'bad', 0.5)",
                  [ids[0], json.dumps([{"role": "user", "content": "hi"}])])
    c = data(store, tmp_path).cycle("c1")
    assert c["timings"] == {"explore": 10.0, "gate": 5.0}
    assert {s["strategy"]: (s["candidates"], s["scored"], s["mean"]) for s in c["strategies"]} == {
        "plain": (2, 2, 0.75), "fewshot": (1, 0, None)}
    assert c["n_pairs"] == 1 and c["pairs"][0]["prompt"] == "hi"
    ex = c["examples"][0]
    assert ex["prompt"].startswith("Question 0:") and ex["current"] == "<EMAIL>" and ex["verdict"] == "loss"
    assert data(store, tmp_path).cycle("nope") is None
    listed = data(store, tmp_path).cycles()["rows"]
    assert [(r["cycle_id"], r["candidates"], r["pairs"]) for r in listed] == [("c1", 3, 1)]


def test_a_running_cycle_shows_its_log(store, tmp_path):
    store.execute("INSERT INTO cycles (cycle_id, started_at, status) VALUES ('c2', now(), 'running')")
    (tmp_path / "cycles" / "c2").mkdir(parents=True)
    (tmp_path / "cycles" / "c2" / "cycle.log").write_text("".join(f"line {i}\n" for i in range(40)))
    c = data(store, tmp_path).cycle("c2")
    assert c["log"] == [f"line {i}" for i in range(25, 40)]
    assert data(store, tmp_path).cycles()["running"][0]["cycle_id"] == "c2"


def test_lift_results_become_a_chart(store, tmp_path):
    path = tmp_path / "tao_lift.json"
    path.write_text(json.dumps([{"name": "ensemble", "base": {"eval_seen": {"score": 0.1}, "tokens_per_s": 5},
                                 "cycles": [{"result": {"status": "rejected"}, "measured": None},
                                            {"result": {"status": "promoted"},
                                             "measured": {"eval_seen": {"score": 0.4}}}]}]))
    lift = data(store, tmp_path, lift_results=path).lift()
    assert lift[0]["chart"] == {"x": [0, 1, 2], "series": [{"label": "eval_seen", "values": [0.1, 0.1, 0.4]}]}
    assert data(store, tmp_path, lift_results=tmp_path / "none.json").lift() is None


def test_search_takes_percent_and_underscore_literally(store, tmp_path, filled):
    d = data(store, tmp_path)
    assert d.completions(q="%")["rows"] == [] and d.completions(q="_")["rows"] == []
    assert len(d.completions(q="Question 1_")["rows"]) == 0
    assert d.completions(q="what is 12 + 1")["rows"][0]["prompt"].startswith("Question 12:")
