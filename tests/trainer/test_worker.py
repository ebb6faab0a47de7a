"""The worker's cycle runner and `select`, on a real DuckDB file, without vLLM: the paths
here end before exploration (nothing new to learn from), or test the stage directly."""
import hashlib
import json
import os
import sys
import threading
import time

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
    store.cycles.mark_interrupted()
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


# A stand-in for `python -m trainer.cycle CYCLE_DIR` that hangs printing nothing, after
# starting a grandchild that ignores SIGTERM; both pids go to CYCLE_DIR/pids.
HANGING_CYCLE = """
import signal, subprocess, sys, time
from pathlib import Path
grandchild = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"])
tmp = Path(sys.argv[1]) / "pids.tmp"
tmp.write_text(f"{__import__('os').getpid()} {grandchild.pid}")
tmp.rename(Path(sys.argv[1]) / "pids")
time.sleep(3600)
"""


def hanging_cycle(tmp_path) -> list[str]:
    script = tmp_path / "hang.py"
    script.write_text(HANGING_CYCLE)
    return [sys.executable, str(script)]


def gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # killed, not yet reaped by init
    except psutil.NoSuchProcess:
        return True


def started_pids(data_dir, timeout_s: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        for pids in data_dir.glob("cycles/*/pids"):
            return [int(p) for p in pids.read_text().split()]
        if time.monotonic() > deadline:
            raise AssertionError("the stand-in cycle never got as far as starting its grandchild")
        time.sleep(0.05)


@pytest.mark.timeout(120)
def test_a_cycle_past_its_budget_is_killed_with_all_it_started(store, tmp_path):
    # 5 s: time enough for the stand-in to start its grandchild on a busy machine.
    settings = WorkerSettings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9", cycle_timeout_s=5)
    runner = CycleRunner(settings, store)
    runner.child_cmd = hanging_cycle(tmp_path)
    res = runner.run(force=True)
    assert res["status"] == "failed"
    assert "budget of 5s (TAO_CYCLE_TIMEOUT_S)" in res["reason"]
    assert all(gone(pid) for pid in started_pids(tmp_path, timeout_s=0))
    status, reason = store.query("SELECT status, reason FROM cycles")[0]
    assert status == "failed" and "TAO_CYCLE_TIMEOUT_S" in reason
    cycle_dir = next((tmp_path / "cycles").iterdir())
    assert "TAO_CYCLE_TIMEOUT_S" in (cycle_dir / "report.md").read_text()
    # The runner is free again: the next cycle (the real child this time) runs.
    runner.child_cmd = CycleRunner(settings, store).child_cmd
    assert runner.run(force=True)["status"] == "skipped"


@pytest.mark.timeout(120)
def test_stopping_the_worker_kills_a_running_cycle(tmp_path):
    from fastapi.testclient import TestClient

    from trainer.worker import create_app

    settings = WorkerSettings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9")  # budget: hours
    results = []
    with TestClient(create_app(settings)) as client:
        runner = client.app.state.runner
        runner.child_cmd = hanging_cycle(tmp_path)
        thread = threading.Thread(target=lambda: results.append(runner.run(force=True)))
        thread.start()
        pids = started_pids(tmp_path)
    # The lifespan's shutdown has run: the cycle's processes are gone and the cycle is recorded.
    assert all(gone(pid) for pid in pids)
    thread.join(30)
    assert results == [{"cycle_id": results[0]["cycle_id"], "status": "interrupted",
                        "reason": "the worker stopped during this cycle"}]
    store = Store(tmp_path / "tao.duckdb")
    try:
        assert store.query("SELECT status FROM cycles") == [("interrupted",)]
    finally:
        store.close()


def test_the_judge_key_stays_out_of_the_cycle_directory_yet_reaches_the_child(store, tmp_path, monkeypatch):
    from trainer.worker import child_env

    key = "sk-judge-0123456789abcdef"
    monkeypatch.setenv("TAO_JUDGE_API_KEY", key)
    settings = WorkerSettings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9")
    assert settings.judge_api_key == key and key not in repr(settings)
    runner = CycleRunner(settings, store)
    # A stand-in child that reads its settings as trainer.cycle.main does, and says (as a hash)
    # which judge key it got.
    script = tmp_path / "child.py"
    script.write_text(
        "import hashlib, json, sys\nfrom pathlib import Path\nfrom trainer.settings import WorkerSettings\n"
        "d = Path(sys.argv[1])\ns = WorkerSettings.model_validate_json((d / 'settings.json').read_text())\n"
        "got = hashlib.sha256((s.judge_api_key or '').encode()).hexdigest()\n"
        "(d / 'result.json').write_text(json.dumps({'status': 'skipped', 'reason': got}))\n")
    runner.child_cmd = [sys.executable, str(script)]
    res = runner.run(force=True)
    assert res["reason"] == hashlib.sha256(key.encode()).hexdigest()
    cycle_dir = next((tmp_path / "cycles").iterdir())
    files = [p for p in cycle_dir.rglob("*") if p.is_file()]
    assert {"settings.json", "job.json", "cycle.log", "report.md"} <= {p.name for p in files}
    assert [p.name for p in files if key.encode() in p.read_bytes()] == []
    # A key given to the worker in code, not in its environment, reaches the child too.
    monkeypatch.delenv("TAO_JUDGE_API_KEY")
    given = WorkerSettings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9", judge_api_key="sk-in-code",
                           signing_key="signing-in-code")
    env = child_env(given)
    assert env["TAO_JUDGE_API_KEY"] == "sk-in-code" and env["TAO_SIGNING_KEY"] == "signing-in-code"
    assert "sk-in-code" not in given.model_dump_json()
    monkeypatch.setattr(os, "environ", env)
    assert WorkerSettings.model_validate_json(given.model_dump_json()).judge_api_key == "sk-in-code"


def test_a_cycle_child_dies_with_a_worker_killed_hard(tmp_path):
    """The cycle runs in its own session (so a budget can kill its group); a SIGKILLed worker
    must not leave it running: it asks Linux for SIGKILL on its parent's death."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    pid_file = tmp_path / "child.pid"
    child = ("import os, time; from trainer.cycle import _die_with_parent; _die_with_parent(); "
             f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)")
    worker = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}], "
                               "start_new_session=True); time.sleep(120)"])
    cycle = None
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the stand-in cycle never started"
            time.sleep(0.1)
        cycle = psutil.Process(int(pid_file.read_text()))
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        cycle.wait(30)  # raises psutil.TimeoutExpired if it outlives the worker
    finally:
        worker.kill()
        if cycle is not None and cycle.is_running():
            cycle.kill()
