"""What the console shows, read from the worker's DuckDB, the model registry and the
collector's counters. One method a page (or a page's part); each returns plain dicts and
lists for the templates. No figure is computed in a template: the tests compare these with
the data (tests/trainer/console/).

Every query reads through the Store's per-thread cursor, so a page never waits for the
collector's writes (DuckDB MVCC) and never blocks them.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from feedback.registry import list_versions
from feedback.store import Store
from trainer.scrub import scrub
from trainer.stats import wilson

# Windows a page can show, in minutes (0: everything stored), and the width of a chart's
# buckets for each: about 60-170 points a series.
WINDOWS: dict[int, tuple[str, int]] = {60: ("last hour", 1), 1440: ("last 24 hours", 15),
                                       10080: ("last 7 days", 60), 0: ("everything", 1440)}
PAGE_SIZE = 50
TEXT_CHARS = 400  # of a prompt or an answer in a list; the row's detail shows the whole (scrubbed)

# The shape of a request, from what it declares: the tools it offers (by name), the name of
# its JSON schema, JSON mode, else the client's task tag, else "chat". (The trainer's
# task_shape also reads keys asked for in words; that takes Python per row, too slow for a
# page over 100,000 rows.)
SHAPE_SQL = """CASE
    WHEN json_array_length(params->'tools') > 0
        THEN 'tools: ' || array_to_string(list_sort(json_extract_string(params, '$.tools[*].function.name')), ', ')
    WHEN json_extract_string(params, '$.response_format.type') = 'json_schema'
        THEN 'schema: ' || coalesce(json_extract_string(params, '$.response_format.json_schema.name'), '?')
    WHEN json_extract_string(params, '$.response_format.type') = 'json_object' THEN 'json'
    WHEN task IS NOT NULL THEN 'task: ' || task
    ELSE 'chat' END"""


def window_of(minutes: int | None) -> int:
    return minutes if minutes in WINDOWS else 60


def _since(minutes: int) -> datetime:
    return (datetime.now(timezone.utc) - timedelta(minutes=minutes)) if minutes else datetime(1970, 1, 1, tzinfo=timezone.utc)


def _r(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(float(v), nd)


def _scrubbed(text: str | None, limit: int | None = TEXT_CHARS) -> str:
    text = text or ""
    if limit is not None and len(text) > limit + 200:
        # Only what is shown is scrubbed (scrubbing costs ~4 ms per 20 KB): the slack keeps a
        # secret cut at the edge long enough to be recognised.
        text = text[:limit + 200]
    out = scrub(text)[0]
    return out if limit is None or len(out) <= limit else out[:limit] + " …"


def _last_user(messages: str | list) -> str:
    msgs = json.loads(messages) if isinstance(messages, str) else messages
    for m in reversed(msgs or []):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):  # content parts
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            return c or ""
    return ""


@dataclass
class ConsoleData:
    store: Store
    data_dir: Path
    collector_stats: Callable[[], dict]
    lift_results: Path | None = None
    tenant_names: Callable[[], dict[str, str]] = dict  # tenant -> the name of its API key
    running_log_lines: int = 15

    def _label(self) -> Callable[[str], str]:
        """A tenant's key name, else the start of its hash (a key since removed)."""
        names = self.tenant_names()
        return lambda t: names.get(t, t[:12])

    def _name(self, rows: list[dict]) -> list[dict]:
        label = self._label()
        for r in rows:
            r["tenant_name"] = label(r["tenant"])
        return rows

    # -- traffic ---------------------------------------------------------------------
    def traffic(self, minutes: int) -> dict:
        since = _since(minutes)
        _, bucket = WINDOWS[minutes]
        by_shape = self.store.query_dicts(
            f"""SELECT tenant, {SHAPE_SQL} AS shape, count(*) AS requests,
                   quantile_cont(latency_ms, 0.5) AS p50, quantile_cont(latency_ms, 0.95) AS p95,
                   quantile_cont(latency_ms, 0.99) AS p99,
                   sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
                   string_agg(DISTINCT model_version, ', ' ORDER BY model_version) AS versions
                FROM completions WHERE occurred_at >= ? GROUP BY ALL ORDER BY requests DESC, tenant, shape""", [since])
        by_version = self.store.query_dicts(
            """SELECT model_version AS version, count(*) AS requests, quantile_cont(latency_ms, 0.5) AS p50,
                   quantile_cont(latency_ms, 0.95) AS p95, quantile_cont(latency_ms, 0.99) AS p99,
                   sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
                   strftime(timezone('UTC', min(occurred_at)), '%Y-%m-%d %H:%M:%S') AS first,
                   strftime(timezone('UTC', max(occurred_at)), '%Y-%m-%d %H:%M:%S') AS last
                FROM completions WHERE occurred_at >= ? GROUP BY ALL ORDER BY min(occurred_at)""", [since])
        series = self.store.query(
            f"""SELECT (floor(epoch(occurred_at))::BIGINT // {bucket * 60}) * {bucket * 60} AS t, tenant,
                   count(*) FROM completions WHERE occurred_at >= ? GROUP BY ALL ORDER BY t""", [since])
        self._name(by_shape)
        for row in by_shape + by_version:
            for k in ("p50", "p95", "p99"):
                row[k] = _r(row[k])
        span = max(minutes, 1) if minutes else self._span_minutes(since)
        for row in by_shape:
            row["per_minute"] = round(row["requests"] / span, 2)
        total = sum(r["requests"] for r in by_shape)
        return {"minutes": minutes, "bucket": bucket, "by_shape": by_shape, "by_version": by_version,
                "total": total, "per_minute": round(total / span, 2), "span_minutes": round(span, 1),
                "chart": _per_minute_series(series, bucket, since, self._label())}

    def _span_minutes(self, since: datetime) -> float:
        first = self.store.query("SELECT min(occurred_at) FROM completions WHERE occurred_at >= ?", [since])[0][0]
        if first is None:
            return 1.0
        return max((datetime.now(timezone.utc) - first).total_seconds() / 60, 1.0)

    def completions(self, q: str = "", tenant: str = "", version: str = "", before: datetime | None = None,
                    limit: int = PAGE_SIZE) -> dict:
        """The newest completions (scrubbed), matching a search, each with its feedback."""
        where, params = ["TRUE"], []
        if q:  # the words as typed: % and _ match themselves
            like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(c.response ILIKE ? ESCAPE '\\' OR CAST(c.messages AS VARCHAR) ILIKE ? ESCAPE '\\')")
            params += [like, like]
        if tenant:  # a key's name or its tenant hash
            by_name = {name: t for t, name in self.tenant_names().items()}
            where.append("c.tenant = ?")
            params.append(by_name.get(tenant, tenant))
        if version:
            where.append("c.model_version = ?")
            params.append(version)
        if before is not None:
            where.append("c.occurred_at < ?")
            params.append(before)
        rows = self.store.query_dicts(
            f"""SELECT c.completion_id, strftime(timezone('UTC', c.occurred_at), '%Y-%m-%d %H:%M:%S.%f') AS occurred_at, c.tenant, c.model_version,
                   {SHAPE_SQL} AS shape,
                   c.messages, c.response, c.latency_ms, c.prompt_tokens, c.completion_tokens
                FROM completions c WHERE {' AND '.join(where)} ORDER BY c.occurred_at DESC LIMIT ?""",
            [*params, limit])
        self._name(rows)
        fb = self._feedback_for([r["completion_id"] for r in rows])
        for r in rows:
            r["prompt"] = _scrubbed(_last_user(r.pop("messages")))
            r["response"] = _scrubbed(r["response"])
            r["latency_ms"] = _r(r["latency_ms"])
            r["feedback"] = fb.get(r["completion_id"], [])
        return {"rows": rows, "q": q, "tenant": tenant, "version": version,
                "next_before": rows[-1]["occurred_at"] if len(rows) == limit else None}

    def _feedback_for(self, ids: list[str]) -> dict[str, list[dict]]:
        if not ids:
            return {}
        rows = self.store.query_dicts(
            """SELECT completion_id, kind, CAST(value AS VARCHAR) AS value, tenant FROM feedback
               WHERE completion_id IN (SELECT unnest(?)) ORDER BY occurred_at""", [ids])
        out: dict[str, list[dict]] = {}
        for r in rows:
            value = json.loads(r["value"])
            text = _scrubbed(str(value), 200) if r["kind"] in ("correction", "comment") else value
            out.setdefault(r["completion_id"], []).append({"kind": r["kind"], "value": text})
        return out

    # -- feedback ----------------------------------------------------------------------
    def feedback(self, minutes: int) -> dict:
        since = _since(minutes)
        _, bucket = WINDOWS[minutes]
        by_kind = self.store.query_dicts(
            """SELECT kind, count(*) AS n, count(DISTINCT tenant) AS tenants FROM feedback
               WHERE occurred_at >= ? GROUP BY kind ORDER BY n DESC""", [since])
        series = self.store.query(
            f"""SELECT (floor(epoch(occurred_at))::BIGINT // {bucket * 60}) * {bucket * 60} AS t, kind, count(*)
                FROM feedback WHERE occurred_at >= ? GROUP BY ALL ORDER BY t""", [since])
        # Counted as the live canary counts them (trainer/live.py): each answer's last thumbs on
        # its first choice, for the version that served it; the tenants who rated stand beside
        # the rate, since one key's thumbs are evidence, not a verdict.
        per_version = self.store.query_dicts(
            """WITH t AS (SELECT completion_id, arg_max(CAST(value AS VARCHAR), occurred_at) AS thumb FROM feedback
                   WHERE kind = 'thumbs' AND choice_index = 0 AND occurred_at >= ? GROUP BY completion_id)
               SELECT c.model_version AS version, count(*) AS rated, count(*) FILTER (WHERE t.thumb = '"down"') AS down,
                   count(DISTINCT c.tenant) AS tenants
               FROM t JOIN completions c USING (completion_id) GROUP BY ALL ORDER BY min(c.occurred_at)""", [since])
        for row in per_version:
            iv = wilson(row["down"], row["rated"])
            row["rate"], row["low"], row["high"] = _r(iv.value, 3), _r(iv.low, 3), _r(iv.high, 3)
        ratings = self.store.query_dicts(
            """WITH r AS (SELECT completion_id, arg_max(CAST(value AS DOUBLE), occurred_at) AS rating FROM feedback
                   WHERE kind = 'rating' AND choice_index = 0 AND occurred_at >= ? GROUP BY completion_id)
               SELECT c.model_version AS version, count(*) AS n, avg(r.rating) AS mean
               FROM r JOIN completions c USING (completion_id) GROUP BY ALL ORDER BY min(c.occurred_at)""", [since])
        for row in ratings:
            row["mean"] = _r(row["mean"], 2)
        return {"minutes": minutes, "bucket": bucket, "by_kind": by_kind, "per_version": per_version,
                "ratings": ratings, "total": sum(r["n"] for r in by_kind), "chart": _per_minute_series(series, bucket, since)}

    # -- models ----------------------------------------------------------------------
    def models(self) -> dict:
        events = self.store.query_dicts(
            """SELECT strftime(timezone('UTC', occurred_at), '%Y-%m-%d %H:%M:%S') AS occurred_at, type, version, parent, cycle_id,
                   json_extract_string(raw, '$.payload.rolled_back_from') AS rolled_back_from,
                   json_extract_string(raw, '$.payload.reason') AS reason
               FROM model_events ORDER BY occurred_at""")
        live = events[-1]["version"] if events else "base"
        rolled_back = {e["rolled_back_from"] for e in events if e["type"] == "ModelRolledBack"}
        promoted_at = {}
        for e in events:
            if e["type"] == "ModelPromoted":
                promoted_at.setdefault(e["version"], e["occurred_at"])
        versions = []
        for meta in list_versions(self.data_dir):
            gate = meta.gate or {}
            probes = gate.get("probes") or {}
            versions.append({
                "version": meta.version, "parent": meta.parent or "base", "cycle_id": meta.cycle_id,
                "verdict": meta.status, "promoted_at": promoted_at.get(meta.version),
                "rolled_back": meta.version in rolled_back, "live": meta.version == live,
                "counts": meta.counts, "reward": meta.reward or {}, "mix": gate.get("mix"),
                "win": gate.get("win_interval") or {}, "wins": gate.get("wins"), "losses": gate.get("losses"),
                "ties": gate.get("ties"), "vs_parent": probes.get("vs_parent") or {},
                "vs_base": probes.get("vs_base") or {}, "reasons": gate.get("reasons") or [],
                "timings": meta.timings})
        return {"live": live, "events": events, "versions": versions}

    # -- cycles ----------------------------------------------------------------------
    def cycles(self, limit: int = 100) -> dict:
        rows = self.store.query_dicts(
            """SELECT cycle_id, strftime(timezone('UTC', started_at), '%Y-%m-%d %H:%M:%S') AS started_at, status, reason, version,
                   epoch(coalesce(finished_at, now()) - started_at) AS seconds,
                   (SELECT count(*) FROM cycle_pairs p WHERE p.cycle_id = c.cycle_id) AS pairs,
                   (SELECT count(*) FROM cycle_candidates k WHERE k.cycle_id = c.cycle_id) AS candidates,
                   report->>'$.counts.prompts' AS prompts
               FROM cycles c ORDER BY started_at DESC LIMIT ?""", [limit])
        for r in rows:
            r["seconds"] = _r(r["seconds"])
        return {"rows": rows, "running": [r for r in rows if r["status"] == "running"], "lift": self.lift()}

    def cycle(self, cycle_id: str) -> dict | None:
        rows = self.store.query_dicts(
            """SELECT cycle_id, strftime(timezone('UTC', started_at), '%Y-%m-%d %H:%M:%S') AS started_at, strftime(timezone('UTC', finished_at), '%Y-%m-%d %H:%M:%S') AS finished_at,
                   status, reason, version, epoch(coalesce(finished_at, now()) - started_at) AS seconds,
                   CAST(report AS VARCHAR) AS report FROM cycles WHERE cycle_id = ?""", [cycle_id])
        if not rows:
            return None
        c = rows[0]
        c["seconds"] = _r(c["seconds"])
        report = json.loads(c.pop("report")) if c["report"] else {}
        c["report"] = report
        c["timings"] = {k: v for k, v in (report.get("timings") or {}).items() if k != "total"}
        c["strategies"] = self.store.query_dicts(
            """SELECT strategy, count(*) AS candidates, avg(score) AS mean, max(score) AS best,
                   count(score) AS scored FROM cycle_candidates WHERE cycle_id = ? GROUP BY strategy
               ORDER BY strategy""", [cycle_id])
        for s in c["strategies"]:
            s["mean"], s["best"] = _r(s["mean"], 3), _r(s["best"], 3)
        c["pairs"] = self.store.query_dicts(
            """SELECT prompt_id, CAST(prompt AS VARCHAR) AS prompt, chosen, rejected, margin FROM cycle_pairs
               WHERE cycle_id = ? ORDER BY margin DESC LIMIT 5""", [cycle_id])
        for p in c["pairs"]:
            p["prompt"] = _scrubbed(_last_user(p["prompt"]))
            p["chosen"], p["rejected"] = _scrubbed(p["chosen"]), _scrubbed(p["rejected"])
            p["margin"] = _r(p["margin"], 3)
        c["n_pairs"] = self.store.query("SELECT count(*) FROM cycle_pairs WHERE cycle_id = ?", [cycle_id])[0][0]
        gate = report.get("gate") or {}
        examples = gate.get("examples") or []
        prompts = {r["completion_id"]: r["messages"] for r in self.store.query_dicts(
            "SELECT completion_id, messages FROM completions WHERE completion_id IN (SELECT unnest(?))",
            [[e.get("prompt_id") for e in examples]])} if examples else {}
        c["examples"] = [{"prompt": _scrubbed(_last_user(prompts[e["prompt_id"]])) if e.get("prompt_id") in prompts
                          else "", "verdict": e.get("verdict"), "current": _scrubbed(e.get("current"), 1200),
                          "candidate": _scrubbed(e.get("candidate"), 1200),
                          "score_current": _r(e.get("score_current"), 3),
                          "score_candidate": _r(e.get("score_candidate"), 3),
                          "samples": e.get("samples", 1)} for e in examples]
        c["gate"] = gate
        c["log"] = self._log_tail(cycle_id) if c["status"] == "running" else []
        return c

    def _log_tail(self, cycle_id: str) -> list[str]:
        path = self.data_dir / "cycles" / cycle_id / "cycle.log"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        return [_scrubbed(line, 300) for line in lines[-self.running_log_lines:]]

    def lift(self) -> list[dict] | None:
        """The lift benchmark's runs (tests/bench/results/tao_lift.json), when there is one."""
        if not self.lift_results or not self.lift_results.exists():
            return None
        try:
            runs = json.loads(self.lift_results.read_text())
        except (OSError, ValueError):
            return None
        out = []
        for run in runs if isinstance(runs, list) else []:
            base = run.get("base") or {}
            splits = [k for k, v in base.items() if isinstance(v, dict) and isinstance(v.get("score"), (int, float))]
            point = {k: base[k]["score"] for k in splits}
            points = [{"cycle": 0, "verdict": "base", **point}]
            for i, cy in enumerate(run.get("cycles") or [], start=1):
                # A rejected cycle changes nothing served: the benchmark measures nothing new.
                measured = cy.get("measured") or {}
                point = {k: (measured[k]["score"] if isinstance(measured.get(k), dict) else point[k]) for k in splits}
                points.append({"cycle": i, "verdict": (cy.get("result") or {}).get("status"), **point})
            out.append({"name": run.get("name"), "splits": splits, "points": points,
                        "chart": {"x": [p["cycle"] for p in points],
                                  "series": [{"label": k, "values": [p[k] for p in points]} for k in splits]}})
        return out

    # -- collector ---------------------------------------------------------------------
    def collector(self) -> dict:
        stats = self.collector_stats()
        counts = {t: self.store.query(f"SELECT count(*) FROM {t}")[0][0]
                  for t in ("completions", "feedback", "model_events", "cycles")}
        last = stats.get("last_commit")
        return {**stats, "rows": counts, "last_commit_age_s": _r(time.time() - last) if last else None}


def _per_minute_series(rows: list[tuple], bucket: int, since: datetime,
                       label: Callable[[str], str] = str) -> dict[str, Any]:
    """[(bucket epoch, group, count)] as uPlot's columns: x (every bucket from the window's
    start, or the first row's, to now), then one series per group in events per minute (a
    bucket's count over its width), 0 where a group had none."""
    if not rows:
        return {"x": [], "series": []}
    step = bucket * 60
    first = max(int(since.timestamp()) // step * step, min(t for t, _, _ in rows))
    xs = list(range(first, int(time.time()) + 1, step))
    index = {t: i for i, t in enumerate(xs)}
    groups = sorted({g for _, g, _ in rows})
    cols = {g: [0.0] * len(xs) for g in groups}
    for t, g, n in rows:
        if t in index:
            cols[g][index[t]] = round(n / bucket, 6)
    return {"x": xs, "series": [{"label": label(g), "values": cols[g]} for g in groups]}
