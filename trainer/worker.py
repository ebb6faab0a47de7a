"""The worker process: collector -> DuckDB, and the TAO cycle on an APScheduler schedule.

    tao worker            (settings: TAO_*, see trainer/settings.py)

The worker is the only process that opens the DuckDB file. Each cycle runs in a child
process (`python -m trainer.cycle`) over a Parquet snapshot, so training never holds the
database and a crashed cycle cannot take the collector down. HTTP on TAO_WORKER_PORT:
GET /healthz, GET /status, GET /metrics (Prometheus), POST /cycles (run one cycle now and return its result).
A cycle has a wall-clock budget (TAO_CYCLE_TIMEOUT_S): past it, the child and everything it
started are killed and the cycle is recorded as failed, so the worker is never stuck "busy".
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path

from feedback.collector import Collector
from feedback.metrics import collector_registry
from feedback.store import Store
from trainer.registry import next_version
from trainer.report import write_report
from trainer.settings import WorkerSettings

log = logging.getLogger(__name__)

# SIGTERM first, so the child may end cleanly; SIGKILL for whatever is left after this.
KILL_GRACE_S = 5.0


def child_env(settings: WorkerSettings) -> dict[str, str]:
    """The cycle child's environment: the worker's own, plus the secrets that settings.json
    leaves out (fields with exclude=True, e.g. TAO_JUDGE_API_KEY). The child's WorkerSettings
    reads them back from TAO_*, so a key reaches it however the worker got it (environment
    or constructor) without ever landing in a file of the cycle directory."""
    env = dict(os.environ)
    prefix = settings.model_config.get("env_prefix", "")
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if field.exclude and value is not None:
            env[f"{prefix}{name}".upper()] = str(value)
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop the child's whole process group: the cycle's own children (loaders, compilers)
    must not outlive it."""
    for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return  # nothing of the group is left
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            pass


def _copy_output(stream, out) -> None:
    # Progress goes to the worker's log and the cycle's own log. In a thread, so that the
    # budget holds also for a child that hangs printing nothing.
    try:
        for line in stream:
            out.write(line)
            out.flush()  # so `tail -f cycle.log` shows progress as it happens
            if line.startswith("[cycle"):
                log.info(line.rstrip())
    except ValueError:  # cycle.log closed under us: the child was killed and we moved on
        pass


class CycleRunner:
    """Runs cycles one at a time (a second request while one runs is answered 'busy')."""

    def __init__(self, settings: WorkerSettings, store: Store):
        self.settings = settings
        self.store = store
        self._lock = threading.Lock()
        # The child process's command, the cycle directory appended; tests point it at a stand-in.
        self.child_cmd: list[str] = [sys.executable, "-m", "trainer.cycle"]
        self._proc: subprocess.Popen | None = None
        self._stopping = threading.Event()

    def stop(self, timeout: float = 3 * KILL_GRACE_S) -> None:
        """The worker is shutting down: kill a running cycle's processes, and give the run a
        moment to record the cycle as interrupted (else the next start-up does)."""
        self._stopping.set()
        proc = self._proc
        if proc is not None:
            _kill_group(proc)
        if self._lock.acquire(timeout=timeout):
            self._lock.release()

    def mark_interrupted(self) -> None:
        """A cycle still 'running' at start-up was cut off by a restart: say so."""
        self.store.execute("UPDATE cycles SET status = 'interrupted', finished_at = now(), "
                           "reason = 'the worker stopped during this cycle' WHERE status = 'running'")

    def _since(self) -> str | None:
        # A rejected cycle used its prompts too; the replay sample brings old ones back.
        rows = self.store.query("SELECT CAST(max(watermark) AS VARCHAR) FROM cycles "
                                "WHERE status IN ('promoted', 'rejected')")
        return rows[0][0] if rows else None

    def _parent(self) -> tuple[str, str]:
        rows = self.store.query("SELECT version, artifact_path FROM model_events ORDER BY occurred_at DESC LIMIT 1")
        if rows:
            return rows[0][0], rows[0][1]
        rows = self.store.query("SELECT version FROM cycles WHERE status = 'promoted' ORDER BY finished_at DESC LIMIT 1")
        if rows:  # promoted, but the collector has not stored the event yet
            return rows[0][0], str((self.settings.data_dir / "models" / rows[0][0] / "weights").resolve())
        return "base", str(self.settings.base_model)

    def run(self, force: bool = False) -> dict:
        if not self._lock.acquire(blocking=False):
            return {"status": "busy", "reason": "a cycle is already running"}
        if self._stopping.is_set():
            self._lock.release()
            return {"status": "skipped", "reason": "the worker is stopping"}
        try:
            return self._run(force)
        finally:
            self._lock.release()

    def _run(self, force: bool) -> dict:
        s = self.settings
        since = self._since()
        new = self.store.query("SELECT count(*) FROM completions WHERE ? IS NULL OR occurred_at > CAST(? AS TIMESTAMPTZ)",
                               [since, since])[0][0]
        if new < s.min_new_prompts and not force:
            log.info("cycle not started: %d new prompts, TAO_MIN_NEW_PROMPTS=%d", new, s.min_new_prompts)
            return {"status": "skipped", "reason": f"{new} new prompts < TAO_MIN_NEW_PROMPTS={s.min_new_prompts}"}
        cycle_id = datetime.now(timezone.utc).strftime("c%Y%m%dT%H%M%S-") + secrets.token_hex(2)
        parent, parent_path = self._parent()
        job = {"cycle_id": cycle_id, "since": since, "version": next_version(s.data_dir), "parent": parent,
               "parent_path": parent_path}
        self.store.execute("INSERT INTO cycles (cycle_id, started_at, status) VALUES (?, now(), 'running')", [cycle_id])
        cycle_dir = s.data_dir / "cycles" / cycle_id
        cycle_dir.mkdir(parents=True, exist_ok=True)
        log.info("cycle %s: %d new prompts, training on top of %s", cycle_id, new, parent)
        snapshot = self.store.export_snapshot(s.data_dir / "snapshots")
        try:
            job["snapshot"] = str(snapshot)
            (cycle_dir / "job.json").write_text(json.dumps(job, indent=2))
            # Secrets are excluded from the dump; the child gets them in its environment.
            (cycle_dir / "settings.json").write_text(s.model_dump_json(indent=2))
            result = self._run_child(cycle_dir)
            self._record(cycle_id, cycle_dir, result)
            write_report(cycle_dir, result)
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)
        log.info("cycle %s %s: %s (report: %s)", cycle_id, result["status"],
                 result.get("reason") or result.get("version"), cycle_dir / "report.md")
        return result

    def _run_child(self, cycle_dir: Path) -> dict:
        budget = self.settings.cycle_timeout_s
        log_path = cycle_dir / "cycle.log"
        with open(log_path, "w") as out:
            # Its own session, i.e. process group: killing the group also takes what the cycle started.
            proc = subprocess.Popen([*self.child_cmd, str(cycle_dir)], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, env=child_env(self.settings),
                                    start_new_session=True)
            self._proc = proc
            reader = threading.Thread(target=_copy_output, args=(proc.stdout, out), name="cycle-log", daemon=True)
            reader.start()
            timed_out = False
            try:
                if self._stopping.is_set():  # stop() came before _proc was set
                    _kill_group(proc)
                proc.wait(timeout=budget)
            except subprocess.TimeoutExpired:
                timed_out = True
                log.warning("cycle %s ran past TAO_CYCLE_TIMEOUT_S=%.0fs: killing it", cycle_dir.name, budget)
                _kill_group(proc)
            except BaseException:  # Ctrl-C in `tao cycle --once`: its own session does not get the SIGINT
                _kill_group(proc)
                raise
            finally:
                self._proc = None
                reader.join(KILL_GRACE_S)  # a grandchild that left the group may hold the pipe
        if timed_out:
            return {"cycle_id": cycle_dir.name, "status": "failed",
                    "reason": f"the cycle ran past its budget of {budget:.0f}s (TAO_CYCLE_TIMEOUT_S) and was "
                              f"killed: raise TAO_CYCLE_TIMEOUT_S or lower TAO_MAX_PROMPTS; see {log_path}"}
        result_path = cycle_dir / "result.json"
        if result_path.exists():
            return json.loads(result_path.read_text())
        if self._stopping.is_set():
            return {"cycle_id": cycle_dir.name, "status": "interrupted",
                    "reason": "the worker stopped during this cycle"}
        return {"cycle_id": cycle_dir.name, "status": "failed",
                "reason": f"cycle process exited {proc.returncode} without a result; see {log_path}"}

    def _record(self, cycle_id: str, cycle_dir: Path, result: dict) -> None:
        self.store.execute(
            "UPDATE cycles SET finished_at = now(), status = ?, reason = ?, watermark = CAST(? AS TIMESTAMPTZ), "
            "version = ?, report = ? WHERE cycle_id = ?",
            [result["status"], result.get("reason"), result.get("watermark"), result.get("version"),
             json.dumps(result, default=str), cycle_id])
        for table, path in (("cycle_candidates", "candidates.parquet"), ("cycle_pairs", "pairs.parquet")):
            if (cycle_dir / path).exists():
                self.store.execute(f"INSERT INTO {table} SELECT ? AS cycle_id, * FROM read_parquet(?)",
                                   [cycle_id, str(cycle_dir / path)])


def create_app(settings: WorkerSettings):
    from fastapi import FastAPI

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(settings.db_path)
        runner = CycleRunner(settings, store)
        runner.mark_interrupted()
        collector = Collector(settings.kafka_bootstrap, store, max_poll_records=settings.collector_max_poll_records)
        collector.start()
        scheduler = BackgroundScheduler(timezone="UTC")
        trigger = (CronTrigger.from_crontab(settings.cycle_cron, timezone="UTC") if settings.cycle_cron
                   else IntervalTrigger(seconds=settings.cycle_interval_s))
        scheduler.add_job(runner.run, trigger, id="tao-cycle", max_instances=1, coalesce=True)
        scheduler.start()
        app.state.store, app.state.runner, app.state.collector = store, runner, collector
        app.state.metrics = collector_registry(collector.counters)
        log.info("worker up: DuckDB %s, cycles %s", settings.db_path,
                 f"on cron '{settings.cycle_cron}'" if settings.cycle_cron else f"every {settings.cycle_interval_s:.0f}s")
        try:
            yield
        finally:
            scheduler.shutdown(wait=False)
            runner.stop()  # the cycle's processes are in their own session: nothing else stops them
            collector.stop()
            store.close()

    app = FastAPI(title="tao-loop worker", lifespan=lifespan)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/status")
    def status():
        st = app.state.store
        counts = {t: st.query(f"SELECT count(*) FROM {t}")[0][0] for t in ("completions", "feedback", "model_events")}
        cycles = st.query("SELECT cycle_id, status, reason, version, CAST(started_at AS VARCHAR) FROM cycles "
                          "ORDER BY started_at DESC LIMIT 5")
        return {"rows": counts, "feedback_pending": st.feedback_pending(), "collector": app.state.collector.counters.stats(),
                "cycles": [dict(zip(("cycle_id", "status", "reason", "version", "started_at"), c)) for c in cycles]}

    @app.get("/metrics")
    def metrics():
        from fastapi import Response
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(app.state.metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/models")
    def models():
        rows = app.state.store.query(
            "SELECT type, version, artifact_path, parent, cycle_id, CAST(occurred_at AS VARCHAR) FROM model_events "
            "ORDER BY occurred_at")
        events = [dict(zip(("type", "version", "artifact_path", "parent", "cycle_id", "occurred_at"), r)) for r in rows]
        return {"live": events[-1]["version"] if events else "base", "events": events}

    @app.post("/cycles")
    def run_cycle_now():
        # A plain def: FastAPI runs it in a thread, so a long cycle does not block /status.
        return app.state.runner.run(force=True)

    return app


def main(settings: WorkerSettings) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "kafka"):  # per-request and per-connection INFO lines drown ours
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A POST /cycles in flight would hold uvicorn's shutdown (and so runner.stop()) until its
    # cycle ends: give requests a few seconds, then run the lifespan's shutdown anyway.
    uvicorn.run(create_app(settings), host=settings.worker_host, port=settings.worker_port, log_level="warning",
                timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main(WorkerSettings())
