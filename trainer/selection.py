"""The select stage of a TAO cycle: which logged prompts this cycle learns from.

Reads the Parquet snapshot the worker exported (never the DuckDB file) and returns a
`Selection`: training prompts, held-out prompts for the gate, the new watermark and counts.
In order:
1. new prompts (after `since`) plus a seeded replay sample of older ones, so a cycle does
   not forget what earlier traffic taught;
2. secrets and PII scrubbed (trainer.scrub) from messages, served answers and feedback,
   before anything can reach a training table;
3. exact duplicates (same normalized messages) and near duplicates (word 3-shingle Jaccard
   of the user text) removed, keeping the first: new before replayed, earliest first;
4. a task tag per prompt: the request's `task` metadata, else inferred from the text;
5. a stable hash of (seed, normalized prompt) holds out an eval split: a prompt is on the
   same side in every cycle, so the gate never scores on what was trained on;
6. per-tenant caps and the prompt limit on the training side.

    sel = select_prompts(snapshot_dir, since=None, limit=256, seed="tao")
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from trainer.prompts import Prompt, contract_of, served_calls
from trainer.rewards import asked_keys
from trainer.scrub import scrub_value


@dataclass
class Selection:
    train: list[Prompt]
    heldout: list[Prompt]
    watermark: str | None          # newest occurred_at among the new rows (castable to TIMESTAMPTZ)
    stats: dict = field(default_factory=dict)


@dataclass
class _Row:
    prompt: Prompt
    tenant: str
    ts: int                        # occurred_at, microseconds since the epoch
    replay: bool
    redactions: int
    # Exact duplicates dropped in its favour: their feedback joins this row's (the same
    # question asked by several tenants is how several tenants can vouch for one correction).
    merged: list[str] = field(default_factory=list)
    earlier: bool = False          # an earlier cycle's held-out prompt, compared on again


def select_prompts(snapshot: Path, since: str | None, *, limit: int = 256, replay_fraction: float = 0.25,
                   tenant_cap: float = 0.5, holdout_fraction: float = 0.2, near_dup_threshold: float = 0.9,
                   seed: str = "tao", heldout_limit: int | None = None) -> Selection:
    import duckdb  # the trainer child process pays for it, not importers of this module

    con = duckdb.connect()
    comp = _sql_path(snapshot / "completions.parquet")
    cols = ("completion_id, tenant, task, CAST(messages AS VARCHAR), response, epoch_us(occurred_at), "
            "CAST(occurred_at AS VARCHAR), CAST(params AS VARCHAR), CAST(choices AS VARCHAR)")
    new = con.execute(
        f"SELECT {cols} FROM read_parquet('{comp}') WHERE ? IS NULL OR occurred_at > CAST(? AS TIMESTAMPTZ) "
        "ORDER BY occurred_at, completion_id", [since, since]).fetchall()
    watermark = new[-1][6] if new else None
    n_replay = round(replay_fraction * len(new)) if since is not None else 0
    # md5 of (seed, since, id): the same cycle always replays the same rows, the next cycle
    # (another `since`) draws another sample.
    old = con.execute(
        f"SELECT {cols} FROM read_parquet('{comp}') WHERE occurred_at <= CAST(? AS TIMESTAMPTZ) "
        "ORDER BY md5(? || '|' || ? || '|' || completion_id) LIMIT ?",
        [since, seed, since or "", n_replay]).fetchall() if n_replay else []
    rows = [_row(r, replay=False) for r in new] + sorted((_row(r, replay=True) for r in old), key=lambda r: r.ts)

    rows, exact_dups, near_dups = dedupe(rows, near_dup_threshold)
    # The gate scores every held-out prompt with two models: keep it in proportion to `limit`,
    # each tenant in proportion to its traffic, capped like the training side.
    # `heldout_limit`: what the gate compares on at most, so the proportions hold in what it sees.
    n_heldout = max(1, round(limit * holdout_fraction / max(1e-9, 1 - holdout_fraction)))
    n_heldout = min(n_heldout, heldout_limit) if heldout_limit else n_heldout
    side = [in_holdout(r.prompt, seed, holdout_fraction) for r in rows]
    heldout = [r for r, out in zip(rows, side) if out]
    train = [r for r, out in zip(rows, side) if not out]
    # Earlier cycles' held-out prompts were never trained on either (the split is a stable hash
    # of the prompt), so the gate compares on them again where this cycle's leave seats free:
    # its evidence then grows with the traffic seen, instead of resting on one cycle's new
    # prompts (26 a bench-lift cycle, half of them ties: too few to show a real gain).
    heldout_final = proportional(heldout, n_heldout, tenant_cap)
    earlier = _earlier_heldout(con, comp, cols, since, n_heldout - len(heldout_final), seed, holdout_fraction)
    if earlier:
        # Against this cycle's rows (already deduplicated, so kept whole and first); this
        # cycle's own held-out prompts keep their seats, the earlier ones only fill the rest,
        # capped among themselves (a cap over the union could push this cycle's out).
        topped = dedupe(rows + earlier, near_dup_threshold, merge=False)[0][len(rows):]
        heldout_final += proportional(topped, n_heldout - len(heldout_final), tenant_cap)
    for r in rows + [r for r in heldout_final if r.earlier]:
        r.prompt.task = r.prompt.task or infer_task(r.prompt.text)

    # The limit cuts with tenants taking turns; the cap then makes sure no tenant dominates,
    # and holds even when one tenant sent everything (at most cap x limit prompts of one key).
    limited = trim(train, limit, replay_fraction)
    final = cap_tenants(limited, tenant_cap, most=limit)

    chosen = sorted(final, key=lambda r: r.ts) + sorted(heldout_final, key=lambda r: r.ts)
    _attach_feedback(con, snapshot, chosen)
    stats = {
        "new": len(new), "replay_sampled": len(old), "replayed": sum(r.replay and not r.earlier for r in chosen),
        "exact_dups": exact_dups, "near_dups": near_dups,
        "scrubbed": sum(r.redactions > 0 for r in chosen), "redactions": sum(r.redactions for r in chosen),
        "capped": len(limited) - len(final), "over_limit": len(train) - len(limited),
        "heldout_over_limit": len(heldout) - sum(not r.earlier for r in heldout_final),
        "heldout_earlier": sum(r.earlier for r in heldout_final),
        "train": len(final), "heldout": len(heldout_final),
        "tasks": dict(Counter(r.prompt.task for r in chosen)),
        "tenants": dict(Counter(r.tenant for r in final)),
    }
    return Selection([r.prompt for r in chosen[:len(final)]], [r.prompt for r in chosen[len(final):]],
                     watermark, stats)


# Rows read back to find earlier held-out prompts, per seat to fill, over the held-out share:
# enough for duplicates and every tenant, and bounded however long the history.
EARLIER_LOOKBACK = 4


def _earlier_heldout(con, comp: str, cols: str, since: str | None, seats: int, seed: str,
                     fraction: float) -> list[_Row]:
    """Held-out prompts from before `since`, newest first: at most `seats` of them will be used."""
    if since is None or seats <= 0 or fraction <= 0:
        return []
    rows = con.execute(
        f"SELECT {cols} FROM read_parquet('{comp}') WHERE occurred_at <= CAST(? AS TIMESTAMPTZ) "
        "ORDER BY occurred_at DESC, completion_id LIMIT ?",
        [since, math.ceil(EARLIER_LOOKBACK * seats / fraction)]).fetchall()
    out = [_row(r, replay=True) for r in rows]
    out = [r for r in out if in_holdout(r.prompt, seed, fraction)]
    for r in out:
        r.earlier = True
    return out


def _sql_path(p: Path) -> str:
    return str(p).replace("'", "''")


def _row(r: tuple, replay: bool) -> _Row:
    cid, tenant, task, messages, response, ts, _, params, choices = r
    messages, n_msg = scrub_value(json.loads(messages))
    served, n_served = scrub_value(response)
    # The contract (schemas, tool definitions) is the client's own text: scrubbed like the messages.
    contract, n_contract = scrub_value(contract_of(json.loads(params or "{}")))
    calls, n_calls = scrub_value(served_calls(json.loads(choices or "[]")))
    prompt = Prompt(cid, messages, task or None, [], served=served, contract=contract, served_tool_calls=calls)
    return _Row(prompt, tenant, ts, replay, n_msg + n_served + n_contract + n_calls)


def _attach_feedback(con, snapshot: Path, rows: list[_Row]) -> None:
    """Feedback of the chosen prompts, in today's shape, with corrections and comments scrubbed."""
    fb = snapshot / "feedback.parquet"
    if not rows or not fb.exists():
        return
    by_id = {cid: r for r in rows for cid in (r.prompt.prompt_id, *r.merged)}
    for cid, kind, value, idx, tenant in con.execute(
        f"SELECT completion_id, kind, CAST(value AS VARCHAR), choice_index, tenant FROM read_parquet('{_sql_path(fb)}') "
        "WHERE list_contains(?, completion_id) ORDER BY occurred_at", [list(by_id)]
    ).fetchall():
        row = by_id[cid]
        if cid != row.prompt.prompt_id and kind != "correction":
            continue  # a duplicate's thumbs and ratings judge its own served answer, not this row's
        value, n = scrub_value(json.loads(value))
        row.redactions += n
        # The tenant who said it: a correction counts only when corroborated (trainer/rewards/feedback.py).
        row.prompt.feedback.append({"kind": kind, "value": value, "choice_index": idx, "tenant": tenant})


# -- duplicates -------------------------------------------------------------------------
def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def exact_key(prompt: Prompt) -> str:
    """Messages with every string casefolded and whitespace collapsed: case and spacing
    differences are not different prompts."""
    def norm(v):
        if isinstance(v, str):
            return _norm(v)
        if isinstance(v, list):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v
    return json.dumps(norm(prompt.messages), sort_keys=True, ensure_ascii=False)


def shingles(text: str, n: int = 3) -> frozenset[tuple[str, ...]]:
    words = re.findall(r"\w+", text.casefold())
    if len(words) <= n:
        return frozenset([tuple(words)]) if words else frozenset()
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class NearDupIndex:
    """Exact Jaccard search over shingle sets, fast by prefix filtering: if J(A, B) >= t then
    A and B share a token among the first |X| - ceil(t*|X|) + 1 tokens of each (in any fixed
    order), so only sets sharing such a prefix token are compared. No all-pairs loop."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.sets: list[frozenset] = []
        self.by_token: dict[tuple, list[int]] = defaultdict(list)

    def _prefix(self, s: frozenset) -> list[tuple]:
        # Hash order, not alphabetical, so a few common shingles do not sit in every prefix.
        # hash() differs between processes; the answer does not, only the work done.
        return sorted(s, key=hash)[: len(s) - math.ceil(self.threshold * len(s)) + 1]

    def has_near(self, s: frozenset) -> bool:
        candidates = {i for tok in self._prefix(s) for i in self.by_token.get(tok, ())}
        return any(jaccard(s, self.sets[i]) >= self.threshold for i in candidates)

    def add(self, s: frozenset) -> None:
        self.sets.append(s)
        for tok in self._prefix(s):
            self.by_token[tok].append(len(self.sets) - 1)


def dedupe(rows: list[_Row], threshold: float, *, merge: bool = True) -> tuple[list[_Row], int, int]:
    """Rows in order with exact and near duplicates of an earlier row dropped; returns
    (kept, exact duplicates, near duplicates). Runs on scrubbed text, so prompts that differ
    only in an email address or a key are duplicates too. `merge`: an exact duplicate's id
    joins the kept row's (its feedback with it)."""
    seen: dict[str, _Row] = {}
    index = NearDupIndex(threshold)
    kept, exact, near = [], 0, 0
    for r in rows:
        key = exact_key(r.prompt)
        if key in seen:
            exact += 1
            if merge:
                seen[key].merged.append(r.prompt.prompt_id)
            continue
        sh = shingles(r.prompt.text)
        if sh and threshold <= 1 and index.has_near(sh):
            near += 1
            continue
        seen[key] = r
        if sh:
            index.add(sh)
        kept.append(r)
    return kept, exact, near


# -- task tags, holdout, caps -----------------------------------------------------------
_SQL = re.compile(r"(?i)\bsql\b|\bcreate\s+table\b|\bselect\s+[\w*,\s]+\s+from\b")
_QUERY = re.compile(r"(?i)\bquer(?:y|ies)\b")
_SCHEMA = re.compile(r"(?i)\b(?:tables?|schema|columns?|database|rows?)\b")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?")
_EXPR = re.compile(r"\d\s*[+*×÷^=]\s*\(?\d|\d\s+[-/]\s+\(?\d")
_MATH_ASK = re.compile(r"(?i)\bhow\s+(?:many|much|long|far|old)\b|\bcalculate\b|\bcompute\b|\bsolve\b"
                       r"|\bwhat\s+is\s+the\s+(?:sum|product|total|average|difference|remainder)\b|\bwhat\s+percent")


def infer_task(text: str) -> str:
    """extract_json | sql | math | general, from the user text alone."""
    if asked_keys(text):
        return "extract_json"
    if _SQL.search(text) or (_QUERY.search(text) and _SCHEMA.search(text)):
        return "sql"
    if _EXPR.search(text) or (len(_NUMBER.findall(text)) >= 2 and _MATH_ASK.search(text)):
        return "math"
    return "general"


def in_holdout(prompt: Prompt, seed: str, fraction: float) -> bool:
    """sha256, not hash(): Python salts hash() per process, and the split must hold across cycles."""
    digest = hashlib.sha256(f"{seed}\x00{exact_key(prompt)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _priority(rows: list[_Row]) -> list[_Row]:
    """New prompts first (fresh traffic and feedback), replayed ones after; within each, the
    tenants take turns, each newest first, so cutting the list anywhere stays fair."""
    turn: Counter = Counter()
    keyed = []
    for r in sorted(rows, key=lambda r: (r.replay, -r.ts)):
        keyed.append(((r.replay, turn[r.replay, r.tenant], -r.ts), r))
        turn[r.replay, r.tenant] += 1
    return [r for _, r in sorted(keyed, key=lambda kr: kr[0])]


def tenant_quota(sizes: list[int], cap: float) -> int:
    """How many items each tenant may keep (`sizes`: each tenant's count) so that none holds
    more than `cap` of what is kept: the largest m with m <= cap x sum(min(size, m)). If the
    cap cannot be met (cap < 1/tenants), every tenant gets an equal share; alone, a tenant
    keeps everything (nobody to crowd out). Also the reward model's (trainer/reward_model.py)."""
    if len(sizes) < 2:
        return max(sizes, default=0)
    return next((m for m in range(max(sizes), 0, -1) if m <= cap * sum(min(n, m) for n in sizes)), min(sizes))


def cap_tenants(rows: list[_Row], cap: float, most: int | None = None) -> list[_Row]:
    """Rows with no tenant above `cap` of the total, keeping each tenant's newest. If the cap
    cannot be met (cap < 1/tenants), every tenant gets an equal share. `most`: the cycle's
    prompt limit; no tenant gets more than cap x most either, so one key that sent all the
    traffic still supplies at most that share of a cycle."""
    counts = Counter(r.tenant for r in rows)
    if not counts or cap >= 1:
        return rows
    quota = tenant_quota(list(counts.values()), cap)
    if most is not None:
        quota = min(quota, max(1, math.floor(cap * most)))
    taken: Counter = Counter()
    kept = []
    for r in _priority(rows):
        if taken[r.tenant] < quota:
            taken[r.tenant] += 1
            kept.append(r)
    return kept


def proportional(rows: list[_Row], n: int, cap: float) -> list[_Row]:
    """At most `n` rows, each tenant's share in proportion to its rows (largest remainders),
    none above max(1, cap x n) when others are there to fill; each tenant's newest first."""
    by_tenant: dict[str, list[_Row]] = defaultdict(list)
    for r in _priority(rows):
        by_tenant[r.tenant].append(r)
    total = sum(map(len, by_tenant.values()))
    if total <= n and (len(by_tenant) < 2 or cap >= 1):
        return _priority(rows)
    bound = max(1, math.floor(cap * n)) if len(by_tenant) > 1 and cap < 1 else n
    exact = {t: min(n * len(rs) / total, bound) for t, rs in by_tenant.items()}
    share = {t: min(math.floor(q), len(by_tenant[t])) for t, q in exact.items()}
    # Seats left by rounding (or by the cap) go to the largest remainders that still have rows and room.
    for t in sorted(by_tenant, key=lambda t: exact[t] - math.floor(exact[t]), reverse=True) * n:
        if sum(share.values()) >= n:
            break
        if share[t] < min(len(by_tenant[t]), bound):
            share[t] += 1
    picked = {id(r) for t, rs in by_tenant.items() for r in rs[: share[t]]}
    return [r for r in _priority(rows) if id(r) in picked]


def trim(rows: list[_Row], limit: int, replay_fraction: float) -> list[_Row]:
    """At most `limit` rows, replayed ones keeping about their share of the limit."""
    if len(rows) <= limit:
        return rows
    new = [r for r in _priority(rows) if not r.replay]
    old = [r for r in _priority(rows) if r.replay]
    n_old = min(len(old), round(limit * replay_fraction / (1 + replay_fraction)))
    n_new = min(len(new), limit - n_old)
    return new[:n_new] + old[: limit - n_new]
