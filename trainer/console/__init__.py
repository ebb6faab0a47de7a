"""The web console: traffic, feedback, models, cycles and the collector, in a browser.

Served by the worker (trainer/worker.py) at /console, because the worker is the one process
that opens the DuckDB file (DuckDB allows one writer, and a second process cannot even read
while it holds it) and the one that runs cycles, so it alone can show a running cycle's
progress. The gateway stays a thin hot path, and several gateway replicas need no console.
Server-side templates (Jinja2) with htmx for live parts and uPlot for charts, both vendored
under static/vendor: nothing is fetched from a CDN. Admin keys only (auth.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from feedback.collector import Collector
    from feedback.store import Store
    from trainer.settings import WorkerSettings

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def mount(app: "FastAPI") -> None:
    """The console's routes, static files and sign-in answers, on the worker's app."""
    from fastapi.staticfiles import StaticFiles

    from trainer.console.auth import Denied
    from trainer.console.routes import denied, router

    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_exception_handler(Denied, denied)

    @app.middleware("http")
    async def console_headers(request, call_next):
        response = await call_next(request)
        if request.url.path.startswith("/console"):
            # Scripts from this site only (no inline handler can run, whatever text a page
            # shows), no framing (no clickjacking of the buttons), forms post here only.
            response.headers["content-security-policy"] = CSP
            response.headers["x-content-type-options"] = "nosniff"
            response.headers["referrer-policy"] = "same-origin"
        return response


def start(app: "FastAPI", settings: "WorkerSettings", store: "Store", collector: "Collector") -> None:
    """The console's services, on app.state (the routes reach them through dependencies)."""
    from feedback.auth import KeyRing
    from trainer.console.actions import ModelActions
    from trainer.console.auth import ConsoleAuth
    from trainer.console.data import ConsoleData

    key = settings.signing_key_bytes()
    keys = KeyRing(settings.keys_path(), settings.api_key_hashes, settings.admin_key_hash)
    app.state.console_auth = ConsoleAuth(keys, key, settings.console_session_hours * 3600,
                                         signed_out_path=settings.data_dir / "console_signed_out.json")
    app.state.console_data = ConsoleData(store, settings.data_dir, collector.counters.stats,
                                         lift_results=settings.console_lift_results, tenant_names=keys.tenant_names)
    app.state.console_actions = ModelActions(settings.kafka_bootstrap, settings.data_dir, settings.base_model, key,
                                             store)
