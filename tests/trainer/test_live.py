"""The live canary's figures and verdict (trainer/live.py) on a real DuckDB Store. The rollback
through a real gateway is tests/serving/test_gateway_live.py's."""
from datetime import timedelta

import pytest

from feedback.registry import write_metadata
from feedback.store import Store
from schemas.events import (ChatCompleted, ChatCompletedPayload, FeedbackSubmitted, FeedbackSubmittedPayload,
                            ModelPromoted, ModelPromotedPayload, ModelRolledBack, ModelRolledBackPayload)
from schemas.registry import VersionMetadata
from tests.trainer.test_selection import T0
from trainer.cycle import VERIFIERS
from trainer.live import check_live, version_figures

ASK = "Extract the fields name, city from the text. Reply with only a JSON object.\nText: Ana Ruiz lives in Lima."
GOOD, BAD = '{"name": "Ana Ruiz", "city": "Lima"}', "Ana lives somewhere."


def served(cid, version, answer, at, tenant="t1"):
    ev = ChatCompleted(occurred_at=T0 + timedelta(seconds=at), tenant=tenant, payload=ChatCompletedPayload(
        completion_id=cid, model_version=version, messages=[{"role": "user", "content": ASK}],
        choices=[{"index": 0, "text": answer}], latency_ms=1.0))
    return ev, ev.model_dump_json()


def thumbs(cid, value, at, tenant="t1"):
    ev = FeedbackSubmitted(occurred_at=T0 + timedelta(seconds=at), tenant=tenant, payload=FeedbackSubmittedPayload(
        feedback_id=f"f-{cid}-{at}", completion_id=cid, kind="thumbs", value=value))
    return ev, ev.model_dump_json()


def promoted(version, at):
    ev = ModelPromoted(occurred_at=T0 + timedelta(seconds=at), payload=ModelPromotedPayload(
        version=version, artifact_path="/m", parent="base"))
    return ev, ev.model_dump_json()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "tao.duckdb")
    (tmp_path / "models" / "v1").mkdir(parents=True)
    write_metadata(tmp_path / "models" / "v1", VersionMetadata(version="v1", artifact_path="/m", parent="base"))
    yield s
    s.close()


def traffic(version, n, *, downs, bad, start, tenants=("t1", "t2")):
    """n answers of `version`, each rated, from the tenants in turn: the first `downs` thumbs
    down; the first `bad` answers fail the verifier."""
    rows = []
    for i in range(n):
        cid, tenant = f"{version}-{start}-{i}", tenants[i % len(tenants)]
        rows += [served(cid, version, BAD if i < bad else GOOD, start + i, tenant),
                 thumbs(cid, "down" if i < downs else "up", start + i, tenant)]
    return rows


def check(store, tmp_path, **kw):
    return check_live(store, VERIFIERS, **{"bound": 0.1, "min_samples": 20, "confidence": 0.95,
                                                     "window": 500, **kw})


def test_figures_per_version_take_the_last_thumbs(store):
    store.write_batch(traffic("base", 30, downs=3, bad=2, start=0) + [thumbs("base-0-0", "up", 99)], {})
    f = version_figures(store, "base", 500, VERIFIERS)
    assert (f.served, f.rated, f.downs, f.verified, f.passes) == (30, 30, 2, 30, 28)
    # Per tenant too: t1 had answers 0, 2, 4, ... (downs on 0 and 2, then 0's became up), t2 1, 3, ...
    assert (f.tenants["t1"].rated, f.tenants["t1"].downs, f.tenants["t2"].downs) == (15, 1, 1)
    assert f.without("t1").rated == 15 and f.without("t1").passes == 14
    assert version_figures(store, "base", 10, VERIFIERS).served == 10  # the newest 10


def test_a_version_users_dislike_is_rolled_back(store, tmp_path):
    store.write_batch(traffic("base", 40, downs=4, bad=0, start=0) + [promoted("v1", 100)]
                      + traffic("v1", 40, downs=20, bad=0, start=200), {})
    c = check(store, tmp_path)
    assert c.rollback and (c.live, c.parent) == ("v1", "base")
    assert c.reasons[0].startswith("ROLLBACK: thumbs-down rate of v1 is worse than base's by +40.0 [")
    assert c.figures["live"]["downs"] == 20 and c.figures["parent"]["downs"] == 4


def test_failing_verifiers_alone_roll_back(store, tmp_path):
    store.write_batch(traffic("base", 40, downs=0, bad=0, start=0) + [promoted("v1", 100)]
                      + traffic("v1", 40, downs=0, bad=12, start=200), {})
    c = check(store, tmp_path)
    assert c.rollback and "ROLLBACK: verifier failure rate of v1" in c.reasons[1]


def test_no_rollback_within_the_bound_on_few_answers_or_after_a_rollback(store, tmp_path):
    store.write_batch(traffic("base", 40, downs=4, bad=0, start=0) + [promoted("v1", 100)]
                      + traffic("v1", 40, downs=6, bad=0, start=200), {})
    c = check(store, tmp_path)
    assert not c.rollback and "within bounds" in c.reasons[0]  # +5 points: under the 10-point bound
    few = check(store, tmp_path, min_samples=50)
    assert not few.rollback and "too few answers to judge (v1 40, base 40" in few.reasons[0]
    ev = ModelRolledBack(occurred_at=T0 + timedelta(seconds=500), payload=ModelRolledBackPayload(
        version="base", artifact_path="/m", rolled_back_from="v1", reason="r"))
    store.write_batch([(ev, ev.model_dump_json())], {})
    assert not check(store, tmp_path).rollback and check(store, tmp_path).live == "base"


def test_a_gap_above_the_bound_that_may_be_chance_is_no_rollback(store, tmp_path):
    # v1: 6 of 20 down, base 2 of 20: +20 points, above the bound, but its interval reaches below 0.
    store.write_batch(traffic("base", 20, downs=2, bad=0, start=0) + [promoted("v1", 100)]
                      + traffic("v1", 20, downs=6, bad=0, start=200), {})
    c = check(store, tmp_path)
    assert not c.rollback and c.figures["thumbs_down_diff"]["value"] == 0.2 and c.figures["thumbs_down_diff"]["low"] < 0


def test_the_baseline_is_the_version_the_promotion_replaced(store, tmp_path):
    # v2 (whose metadata parent is v1) was promoted over base: users had base before, so v2 is
    # judged against base, and a rollback goes back to base.
    (tmp_path / "models" / "v2").mkdir(parents=True)
    write_metadata(tmp_path / "models" / "v2", VersionMetadata(version="v2", artifact_path="/m", parent="v1"))
    store.write_batch(traffic("base", 40, downs=4, bad=0, start=0) + [promoted("v2", 100)]
                      + traffic("v2", 40, downs=20, bad=0, start=200), {})
    c = check(store, tmp_path)
    assert c.rollback and c.parent == "base"


def test_the_canary_sends_a_rollback_once(store, tmp_path, monkeypatch):
    from trainer import live
    from trainer.settings import WorkerSettings

    store.write_batch(traffic("base", 40, downs=4, bad=0, start=0) + [promoted("v1", 100)]
                      + traffic("v1", 40, downs=20, bad=0, start=200), {})
    sent = []
    monkeypatch.setattr(live, "rollback", lambda *a, **k: sent.append(a))  # the broker is another test's
    canary = live.LiveCanary(WorkerSettings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:1"), store)
    assert canary.run()["rollback"]
    # The rollback has not come back through the collector yet: a second check sends nothing.
    again = canary.run()
    assert not again["rollback"] and again["reasons"] == ["rollback of v1 already sent"] and len(sent) == 1


def test_one_tenant_alone_rolls_nothing_back(store, tmp_path):
    # t2 thumbs down every answer of v1 it gets (half of them); t1 rates v1 as it rated base.
    rows = traffic("base", 40, downs=4, bad=0, start=0) + [promoted("v1", 100)]
    for i in range(40):
        cid, tenant = f"v1-{i}", ("t1", "t2")[i % 2]
        rows += [served(cid, "v1", GOOD, 200 + i, tenant),
                 thumbs(cid, "down" if tenant == "t2" or i < 4 else "up", 200 + i, tenant)]
    store.write_batch(rows, {})
    everyone = check(store, tmp_path, min_tenants=1, min_samples=10)
    assert everyone.rollback  # all answers pooled: +45 points
    c = check(store, tmp_path, min_samples=10)
    assert not c.rollback and "but without tenant t2's answers" in c.reasons[0], c.reasons


def test_a_version_rated_by_one_tenant_only_is_not_rolled_back_by_thumbs(store, tmp_path):
    store.write_batch(traffic("base", 40, downs=4, bad=0, start=0, tenants=("t1",)) + [promoted("v1", 100)]
                      + traffic("v1", 40, downs=30, bad=0, start=200, tenants=("t1",)), {})
    c = check(store, tmp_path)
    assert not c.rollback and "only 1 tenant(s) gave those answers" in c.reasons[0]
    assert check(store, tmp_path, min_tenants=1).rollback  # a single-tenant deployment opts out
