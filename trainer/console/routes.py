"""The console's routes: thin, each a page (or an htmx fragment of one) rendered from
ConsoleData; promote and roll back go through ModelActions. Mounted by the worker
(trainer/worker.py) under /console.

    /console/login          sign in with an admin key (the only page open to anyone)
    /console/traffic        requests per minute by tenant and shape, latency, tokens, versions
    /console/completions    recent completions (scrubbed), searchable, with their feedback
    /console/feedback       feedback by kind over time, thumbs-down rate per version
    /console/models         versions, lineage, gate figures; promote / roll back (confirmed)
    /console/cycles         cycles, their stages and timings; /console/cycles/ID one cycle
    /console/collector      lag per partition, rows/s, dead letters by reason
"""
from __future__ import annotations

import hmac
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from trainer.console.actions import ModelActions
from trainer.console.auth import COOKIE, ConsoleAuth, Denied, Session
from trainer.console.data import WINDOWS, ConsoleData, window_of

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix="/console", include_in_schema=False)


def _auth(request: Request) -> ConsoleAuth:
    return request.app.state.console_auth


def _data(request: Request) -> ConsoleData:
    return request.app.state.console_data


def _actions(request: Request) -> ModelActions:
    return request.app.state.console_actions


def _session(request: Request, auth: Annotated[ConsoleAuth, Depends(_auth)]) -> Session:
    return auth.session(request.headers.get("authorization"), request.cookies.get(COOKIE))


AuthDep = Annotated[ConsoleAuth, Depends(_auth)]
DataDep = Annotated[ConsoleData, Depends(_data)]
ActionsDep = Annotated[ModelActions, Depends(_actions)]
SessionDep = Annotated[Session, Depends(_session)]
WindowQ = Annotated[int, Query(description="minutes: 60, 1440, 10080, or 0 for everything")]


def page(request: Request, name: str, session: Session | None, status_code: int = 200, **ctx) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"session": session, "windows": WINDOWS, **ctx},
                                      status_code=status_code)


def denied(request: Request, exc: Denied) -> HTMLResponse:
    """The sign-in page, answered with the status that says why (401 or 403)."""
    nxt = request.url.path if request.method == "GET" and request.url.path != "/console/login" else "/console/traffic"
    return page(request, "login.html", None, status_code=exc.status, message=exc.message, next=nxt)


@router.get("", include_in_schema=False)
@router.get("/")
def home(_: SessionDep) -> Response:
    return RedirectResponse("/console/traffic", status_code=303)


@router.get("/login")
def login_form(request: Request, next: str = "/console/traffic") -> HTMLResponse:
    return page(request, "login.html", None, message=None, next=_local(next))


@router.post("/login")
def login(request: Request, auth: AuthDep, key: Annotated[str, Form()] = "",
          next: Annotated[str, Form()] = "/console/traffic") -> Response:
    cookie = auth.sign_in(key)  # Denied -> the form again, 401 or 403
    resp = RedirectResponse(_local(next), status_code=303)
    resp.set_cookie(COOKIE, cookie, max_age=int(auth.ttl_s), httponly=True, samesite="strict", path="/console",
                    secure=request.url.scheme == "https")
    return resp


@router.post("/logout")
def logout(auth: AuthDep, session: SessionDep, csrf: Annotated[str, Form()] = "") -> Response:
    auth.check_csrf(session, csrf)
    auth.sign_out(session)  # the cookie is dead on the server too, not only deleted in this browser
    resp = RedirectResponse("/console/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/console")
    return resp


@router.get("/traffic")
def traffic(request: Request, session: SessionDep, data: DataDep, window: WindowQ = 60) -> HTMLResponse:
    w = window_of(window)
    return page(request, "traffic.html", session, nav="traffic", window=w, t=data.traffic(w))


@router.get("/completions")
def completions(request: Request, session: SessionDep, data: DataDep, q: str = "", tenant: str = "",
                version: str = "", before: str = "") -> HTMLResponse:
    try:  # the "older" link's time, in UTC
        until = datetime.fromisoformat(before).replace(tzinfo=timezone.utc) if before else None
    except ValueError:
        return page(request, "missing.html", session, status_code=400, nav="completions",
                    message=f"before={before!r} is not a time like 2026-12-06 19:53:03.123456 (UTC)")
    return page(request, "completions.html", session, nav="completions",
                c=data.completions(q=q.strip(), tenant=tenant.strip(), version=version.strip(), before=until))


@router.get("/feedback")
def feedback(request: Request, session: SessionDep, data: DataDep, window: WindowQ = 1440) -> HTMLResponse:
    w = window_of(window)
    return page(request, "feedback.html", session, nav="feedback", window=w, f=data.feedback(w))


@router.get("/models")
def models(request: Request, auth: AuthDep, session: SessionDep, data: DataDep, done: str = "", error: str = "",
           sig: str = "") -> HTMLResponse:
    # An action's message comes back in the URL (post, redirect, get); shown only when signed
    # for this session, so a link cannot make the console say "rolled back" when it did not.
    kind, text = ("done", done) if done else ("error", error)
    if text and not hmac.compare_digest(sig, auth.note_sig(session, kind, text)):
        done, error = "", ""
    return page(request, "models.html", session, nav="models", m=data.models(), done=done, error=error)


@router.post("/models/{version}/promote")
def promote(version: str, auth: AuthDep, session: SessionDep, actions: ActionsDep,
            csrf: Annotated[str, Form()] = "") -> Response:
    auth.check_csrf(session, csrf)
    return _after(actions.promote, version, auth, session)


@router.post("/models/rollback")
def rollback(auth: AuthDep, session: SessionDep, actions: ActionsDep, csrf: Annotated[str, Form()] = "",
             to: Annotated[str, Form()] = "") -> Response:
    auth.check_csrf(session, csrf)
    return _after(actions.rollback, to or None, auth, session)


def _after(action, arg, auth: ConsoleAuth, session: Session) -> Response:
    try:
        msg, ok = action(arg, by=session.principal.name), True
    except (LookupError, ValueError) as e:
        msg, ok = str(e), False
    except Exception as e:  # the broker away, a timeout: said on the page, not a bare 500
        log.exception("console action failed")
        msg, ok = f"not published: {type(e).__name__}: {e}", False
    kind = "done" if ok else "error"
    return RedirectResponse(f"/console/models?{kind}={quote(msg)}&sig={auth.note_sig(session, kind, msg)}",
                            status_code=303)


@router.get("/cycles")
def cycles(request: Request, session: SessionDep, data: DataDep) -> HTMLResponse:
    return page(request, "cycles.html", session, nav="cycles", cy=data.cycles())


@router.get("/cycles/{cycle_id}")
def cycle(request: Request, cycle_id: str, session: SessionDep, data: DataDep) -> HTMLResponse:
    c = data.cycle(cycle_id)
    if c is None:
        return page(request, "missing.html", session, status_code=404, nav="cycles",
                    message=f"No cycle {cycle_id!r} in DuckDB.")
    return page(request, "cycle.html", session, nav="cycles", c=c)


@router.get("/cycles/{cycle_id}/progress")
def cycle_progress(request: Request, cycle_id: str, session: SessionDep, data: DataDep) -> HTMLResponse:
    """The running cycle's part of its page, polled by htmx every 2 s while it runs."""
    c = data.cycle(cycle_id)
    if c is None:
        return HTMLResponse("", status_code=404)
    return page(request, "_progress.html", session, c=c)


@router.get("/collector")
def collector(request: Request, session: SessionDep, data: DataDep, fragment: bool = False) -> HTMLResponse:
    return page(request, "_collector.html" if fragment else "collector.html", session, nav="collector",
                k=data.collector())


def _local(path: str) -> str:
    """A redirect target on this console only (no open redirect to another site)."""
    return path if path.startswith("/console/") and "//" not in path and "\\" not in path else "/console/traffic"
