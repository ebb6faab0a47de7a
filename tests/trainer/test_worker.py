"""The worker's cycle runner and `select`, on a real DuckDB file, without vLLM: the paths
here end before exploration (nothing new to learn from), or test the stage directly."""
import json

import pytest

from feedback.store import Store
from schemas.events import ChatCompleted, ChatCompletedPayload, FeedbackSubmitted, FeedbackSubmittedPayload
from trainer.selection import select_prompts
from trainer.settings import WorkerSettings
from trainer.worker import CycleRunner


def completion(cid, text, answer="{}"):
    ev = ChatCompleted(payload=ChatCompletedPayload(
        completion_id=cid, model_version="base", messages=[{"role": "user", "content": text}],
        choices=[{"index": 0, "text": answer}], latency_ms=1.0))
    return ev, ev.model_dump_json()


def feedback(cid, kind, value):
    ev = FeedbackSubmitted(payload=FeedbackSubmittedPayload(feedback_id=f"f-{cid}-{kind}", completion_id=cid,
                                                            kind=kind, value=value))
    return ev, ev.model_dump_json()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "tao.duckdb")
    yield s
    s.close()


@pytest.fixture
def settings(tmp_path):
    return WorkerSettings(data_dir=tmp_path, min_new_prompts=3, kafka_bootstrap="127.0.0.1:9")


def test_select_dedupes_and_joins_feedback(store, tmp_path):
    store.write_batch([completion("c1", "hello"), completion("c2", "hello"), completion("c3", "other", "served!"),
                       feedback("c3", "thumbs", "down"), feedback("c3", "correction", "better")], {})
    snap = store.export_snapshot(tmp_path / "snaps")
    sel = select_prompts(snap, None, limit=10, holdout_fraction=0)
    prompts = sel.train
    assert sorted(p.prompt_id for p in prompts) == ["c1", "c3"]  # c2 repeats c1's messages exactly
    c3 = next(p for p in prompts if p.prompt_id == "c3")
    assert c3.served == "served!"
    assert {f["kind"]: f["value"] for f in c3.feedback} == {"thumbs": "down", "correction": "better"}
    assert sel.watermark is not None
    assert select_prompts(snap, sel.watermark, limit=10).train == []


def test_scheduled_cycle_waits_for_enough_new_prompts(store, settings):
    store.write_batch([completion("c1", "a"), completion("c2", "b")], {})
    res = CycleRunner(settings, store).run()
    assert res["status"] == "skipped" and "TAO_MIN_NEW_PROMPTS=3" in res["reason"]
    assert store.query("SELECT count(*) FROM cycles")[0][0] == 0


def test_forced_cycle_with_nothing_new_is_recorded_as_skipped(store, settings):
    res = CycleRunner(settings, store).run(force=True)  # runs the real child process
    assert res["status"] == "skipped" and res["reason"] == "no new prompts since the last cycle"
    rows = store.query("SELECT status, reason, report FROM cycles")
    assert rows[0][0] == "skipped" and json.loads(rows[0][2])["counts"] == {"prompts": 0, "heldout": 0}
    assert not list((settings.data_dir / "snapshots").glob("snapshot-*"))  # cleaned up
    cycle_dir = next((settings.data_dir / "cycles").iterdir())
    assert json.loads((cycle_dir / "report.json").read_text())["status"] == "skipped"
    assert "status: **skipped**: no new prompts" in (cycle_dir / "report.md").read_text()


def test_never_two_cycles_at_once(store, settings):
    runner = CycleRunner(settings, store)
    runner._lock.acquire()
    try:
        assert runner.run(force=True)["status"] == "busy"
    finally:
        runner._lock.release()


def test_cycle_cut_off_by_a_restart_is_marked(store, settings):
    store.execute("INSERT INTO cycles (cycle_id, started_at, status) VALUES ('c-old', now(), 'running')")
    CycleRunner(settings, store).mark_interrupted()
    assert store.query("SELECT status FROM cycles WHERE cycle_id = 'c-old'") == [("interrupted",)]


def test_cli_runs_the_cycle_here_when_no_worker_answers(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from deploy.cli import app

    monkeypatch.setenv("TAO_DATA_DIR", str(tmp_path))
    res = CliRunner().invoke(app, ["cycle", "--once", "--worker-url", "http://127.0.0.1:9"])
    assert res.exit_code == 0, res.output
    assert '"status": "skipped"' in res.output
    store = Store(tmp_path / "tao.duckdb")
    try:
        assert store.query("SELECT status FROM cycles") == [("skipped",)]
    finally:
        store.close()
