"""The worker process: collector -> DuckDB, and the TAO cycle on an APScheduler schedule.

    tao worker            (settings: TAO_*, see trainer/settings.py)

The worker is the only process that opens the DuckDB file. Each cycle runs in a child
process (`python -m trainer.cycle`) over a Parquet snapshot, so training never holds the
database and a crashed cycle cannot take the collector down. HTTP on TAO_WORKER_PORT:
GET /healthz, GET /status, GET /metrics (Prometheus), POST /cycles (run one cycle now and return its result),
and the web console at /console (admin keys only; trainer/console/).
A cycle has a wall-clock budget (TAO_CYCLE_TIMEOUT_S): past it, the child and everything it
started are killed and the cycle is recorded as failed, so the worker is never stuck "busy".
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path

from feedback.collector import Collector
from feedback.logs import setup_logging
from feedback.procs import stop as stop_group
from feedback.metrics import collector_registry
from feedback.store import Store
from feedback.registry import next_version
from trainer.job import CycleJob, CycleResult
from trainer.live import LiveCanary
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
            stop_group(proc, KILL_GRACE_S)
        if self._lock.acquire(timeout=timeout):
            self._lock.release()

    def run(self, force: bool = False) -> dict:
        """Run one cycle now (unless one is running or too little is new); its result, as JSON."""
        if not self._lock.acquire(blocking=False):
            return CycleResult(status="busy", reason="a cycle is already running").as_dict()
        if self._stopping.is_set():
            self._lock.release()
            return CycleResult(status="skipped", reason="the worker is stopping").as_dict()
        try:
            return self._run(force).as_dict()
        finally:
            self._lock.release()

    def _run(self, force: bool) -> CycleResult:
        s = self.settings
        since = self.store.cycles.watermark()
        new = self.store.cycles.new_completions(since)
        if new < s.min_new_prompts and not force:
            log.info("cycle not started: %d new prompts, TAO_MIN_NEW_PROMPTS=%d", new, s.min_new_prompts)
            return CycleResult(status="skipped", reason=f"{new} new prompts < TAO_MIN_NEW_PROMPTS={s.min_new_prompts}")
        cycle_id = datetime.now(timezone.utc).strftime("c%Y%m%dT%H%M%S-") + secrets.token_hex(2)
        parent, parent_path = self.store.cycles.live_model(s.data_dir, s.base_model)
        self.store.cycles.start(cycle_id)
        cycle_dir = s.data_dir / "cycles" / cycle_id
        cycle_dir.mkdir(parents=True, exist_ok=True)
        log.info("cycle %s: %d new prompts, training on top of %s", cycle_id, new, parent)
        snapshot = self.store.export_snapshot(s.data_dir / "snapshots")
        try:
            job = CycleJob(cycle_id=cycle_id, since=since, version=next_version(s.data_dir), parent=parent,
                           parent_path=parent_path, snapshot=str(snapshot))
            (cycle_dir / "job.json").write_text(job.model_dump_json(indent=2))
            # Secrets are excluded from the dump; the child gets them in its environment.
            (cycle_dir / "settings.json").write_text(s.model_dump_json(indent=2))
            result = self._run_child(cycle_dir)
            report = result.as_dict()
            self.store.cycles.finish(cycle_id, cycle_dir, report)
            write_report(cycle_dir, report)
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)
        log.info("cycle %s %s: %s (report: %s)", cycle_id, result.status, result.reason or result.version,
                 cycle_dir / "report.md")
        return result

    def _run_child(self, cycle_dir: Path) -> CycleResult:
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
                    stop_group(proc, KILL_GRACE_S)
                proc.wait(timeout=budget)
            except subprocess.TimeoutExpired:
                timed_out = True
                log.warning("cycle %s ran past TAO_CYCLE_TIMEOUT_S=%.0fs: killing it", cycle_dir.name, budget)
                stop_group(proc, KILL_GRACE_S)
            except BaseException:  # Ctrl-C in `tao cycle --once`: its own session does not get the SIGINT
                stop_group(proc, KILL_GRACE_S)
                raise
            finally:
                self._proc = None
                reader.join(KILL_GRACE_S)  # a grandchild that left the group may hold the pipe
        cycle_id = cycle_dir.name
        if timed_out:
            return CycleResult(cycle_id=cycle_id, status="failed",
                               reason=f"the cycle ran past its budget of {budget:.0f}s (TAO_CYCLE_TIMEOUT_S) and was "
                                      f"killed: raise TAO_CYCLE_TIMEOUT_S or lower TAO_MAX_PROMPTS; see {log_path}")
        result_path = cycle_dir / "result.json"
        if result_path.exists():
            try:
                return CycleResult.model_validate_json(result_path.read_text()).model_copy(update={"cycle_id": cycle_id})
            except ValueError as e:  # a child of another version, or a file cut short
                return CycleResult(cycle_id=cycle_id, status="failed", reason=f"unreadable {result_path}: {e}")
        if self._stopping.is_set():
            return CycleResult(cycle_id=cycle_id, status="interrupted", reason="the worker stopped during this cycle")
        return CycleResult(cycle_id=cycle_id, status="failed",
                           reason=f"cycle process exited {proc.returncode} without a result; see {log_path}")


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
        if n := store.cycles.mark_interrupted():
            log.warning("%d cycle(s) were running when the worker last stopped: marked interrupted", n)
        collector = Collector(settings.kafka_bootstrap, store, max_poll_records=settings.collector_max_poll_records)
        collector.start()
        scheduler = BackgroundScheduler(timezone="UTC")
        trigger = (CronTrigger.from_crontab(settings.cycle_cron, timezone="UTC") if settings.cycle_cron
                   else IntervalTrigger(seconds=settings.cycle_interval_s))
        scheduler.add_job(runner.run, trigger, id="tao-cycle", max_instances=1, coalesce=True)
        canary = LiveCanary(settings, store)
        if settings.live_check_interval_s > 0:  # after a promotion, users' verdict can roll it back
            scheduler.add_job(canary.run, IntervalTrigger(seconds=settings.live_check_interval_s), id="tao-live-canary",
                              max_instances=1, coalesce=True)
        scheduler.start()
        app.state.store, app.state.runner, app.state.collector, app.state.canary = store, runner, collector, canary
        app.state.metrics = collector_registry(collector.counters)
        if settings.console_enabled:
            from trainer import console

            console.start(app, settings, store, collector)
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
    if settings.console_enabled:
        from trainer import console

        console.mount(app)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/status")
    def status():
        st = app.state.store
        return {"rows": st.cycles.row_counts(), "feedback_pending": st.feedback_pending(),
                "collector": app.state.collector.counters.stats(), "cycles": st.cycles.recent(5)}

    @app.get("/metrics")
    def metrics():
        from fastapi import Response
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(app.state.metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/models")
    def models():
        events = app.state.store.cycles.model_events()
        return {"live": events[-1]["version"] if events else "base", "events": events}

    @app.post("/live-check")
    def live_check():
        """The live canary now: the live version against its parent, rolled back if worse."""
        return app.state.canary.run()

    @app.post("/cycles")
    def run_cycle_now():
        # A plain def: FastAPI runs it in a thread, so a long cycle does not block /status.
        return app.state.runner.run(force=True)

    return app


def main(settings: WorkerSettings) -> None:
    import uvicorn

    setup_logging()
    # A POST /cycles in flight would hold uvicorn's shutdown (and so runner.stop()) until its
    # cycle ends: give requests a few seconds, then run the lifespan's shutdown anyway.
    uvicorn.run(create_app(settings), host=settings.worker_host, port=settings.worker_port, log_level="warning",
                timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main(WorkerSettings())
