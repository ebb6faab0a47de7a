"""The live canary: after a promotion, how the new version does with real users, against the
version it replaced, and an automatic rollback when it does worse beyond a bound.

Per version, from DuckDB (the worker's store): the thumbs-down rate of its served answers
(the last thumbs on choice 0 of each completion) and the verifier pass rate of those answers
(the cycle's verifiers, on each request's own contract: JSON, schemas, tools, SQL, stated
formats; an answer passes when every verifier with an opinion passes it). The live version
is rolled back (ModelRolledBack, through feedback/registry.py) to the version its promotion
replaced when, for either figure, the difference to that version's is worse than `bound` and
its interval (Newcombe, `confidence`) excludes zero, with at least `min_samples` answers on
each side. A version made live by a rollback is not judged again: it is the one that was good
before.

No one tenant can roll a version back: with `min_tenants` >= 2 (the default), a figure must
also hold when any one tenant's answers are left out, each in turn. One key that thumbs down
every answer of a new version, or sends it only requests its verifiers fail, moves the
figure only with that tenant in, so it decides nothing alone. A deployment with a single
tenant sets TAO_LIVE_MIN_TENANTS=1.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from feedback.registry import rollback
from trainer.prompts import Candidate, Prompt, contract_of, served_calls
from trainer.rewards.ensemble import PASS_AT
from trainer.stats import difference

log = logging.getLogger(__name__)


@dataclass
class Counts:
    served: int = 0
    rated: int = 0       # completions with a thumbs on the served answer
    downs: int = 0
    verified: int = 0    # completions some verifier had an opinion on
    passes: int = 0

    def minus(self, other: "Counts") -> "Counts":
        return Counts(*(a - b for a, b in zip(asdict(self).values(), asdict(other).values())))


@dataclass
class VersionFigures(Counts):
    version: str = ""
    tenants: dict[str, Counts] = field(default_factory=dict)  # the same counts, per tenant of the completion

    def without(self, tenant: str) -> Counts:
        return Counts(**{k: v for k, v in asdict(self).items() if k not in ("version", "tenants")}).minus(
            self.tenants.get(tenant, Counts()))


@dataclass
class LiveCheck:
    live: str
    parent: str | None
    rollback: bool
    reasons: list[str]
    figures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def version_figures(store, version: str, window: int, verifiers: dict) -> VersionFigures:
    """The version's newest `window` completions: their thumbs and their verifiers' verdicts."""
    rows = store.query(
        "WITH c AS (SELECT completion_id, tenant, CAST(messages AS VARCHAR) AS messages, CAST(params AS VARCHAR) AS params, "
        "response, CAST(choices AS VARCHAR) AS choices FROM completions WHERE model_version = ? "
        "ORDER BY occurred_at DESC LIMIT ?), "
        "t AS (SELECT completion_id, arg_max(CAST(value AS VARCHAR), occurred_at) AS thumb FROM feedback "
        "WHERE kind = 'thumbs' AND choice_index = 0 GROUP BY completion_id) "
        "SELECT c.*, t.thumb FROM c LEFT JOIN t USING (completion_id)", [version, window])
    fig = VersionFigures(version=version)
    tenants: dict[str, Counts] = defaultdict(Counts)
    for cid, tenant, messages, params, response, choices, thumb in rows:
        counts = (fig, tenants[tenant])
        for c in counts:
            c.served += 1
        if thumb is not None:
            for c in counts:
                c.rated += 1
                c.downs += json.loads(thumb) == "down"
        calls = served_calls(json.loads(choices or "[]"))
        prompt = Prompt(cid, json.loads(messages), None, [], served=response,
                        contract=contract_of(json.loads(params or "{}")), served_tool_calls=calls)
        answer = [Candidate(response, "served", tool_calls=calls)]
        scores = [s for s in (v(prompt, answer)[0] for v in verifiers.values()) if s is not None]
        if scores:
            for c in counts:
                c.verified += 1
                c.passes += all(s >= PASS_AT for s in scores)
    fig.tenants = dict(tenants)
    return fig


FIGURES = {  # name -> (bad answers, answers judged) of a version's counts
    "thumbs-down rate": lambda c: (c.downs, c.rated),
    "verifier failure rate": lambda c: (c.verified - c.passes, c.verified),
}


def _judge(name: str, new: VersionFigures, old: VersionFigures, *, bound: float, min_samples: int,
           min_tenants: int, confidence: float) -> tuple[bool, str, dict]:
    """(roll back?, the reason, the figure with its interval) for one figure of the live version
    (`new`) against the one it replaced (`old`)."""
    bad = FIGURES[name]

    def worse(a: Counts, b: Counts):
        """(a's figure minus b's with its interval, enough answers on both sides?, beyond the bound?)"""
        (b_a, n_a), (b_b, n_b) = bad(a), bad(b)
        d = difference(b_a, n_a, b_b, n_b, confidence=confidence)
        enough = min(n_a, n_b) >= min_samples
        return d, enough, enough and d.value > bound and d.low > 0

    d, enough, beyond = worse(new, old)
    live, parent = new.version, old.version
    if not enough:
        return False, (f"{name}: too few answers to judge ({live} {bad(new)[1]}, {parent} {bad(old)[1]}; "
                       f"TAO_LIVE_MIN_SAMPLES={min_samples})"), d.as_dict()
    if not beyond:
        return False, f"{name}: {live} - {parent} = {d.text(points=True)} points: within bounds", d.as_dict()
    if min_tenants > 1:
        judged = sorted(t for t in new.tenants if bad(new.tenants[t])[1])
        if len(judged) < min_tenants:
            return False, (f"{name}: {live} - {parent} = {d.text(points=True)} points, but only {len(judged)} "
                           f"tenant(s) gave those answers (TAO_LIVE_MIN_TENANTS={min_tenants}): one tenant "
                           f"alone rolls nothing back"), d.as_dict()
        for t in judged:  # the verdict must stand whichever one tenant is left out
            dt, _, beyond_without = worse(new.without(t), old.without(t))
            if not beyond_without:
                return False, (f"{name}: {live} - {parent} = {d.text(points=True)} points, but without tenant "
                               f"{t}'s answers {dt.text(points=True)}: not beyond the bound for more than one "
                               f"tenant"), d.as_dict()
    return True, (f"ROLLBACK: {name} of {live} is worse than {parent}'s by {d.text(points=True)} points, "
                  f"beyond the {100 * bound:.0f}-point bound"
                  + (", with any one tenant left out" if min_tenants > 1 else "")), d.as_dict()


def check_live(store, verifiers: dict, *, bound: float, min_samples: int, confidence: float,
               window: int, min_tenants: int = 2) -> LiveCheck:
    """The live version against the one its promotion replaced (see the module docstring)."""
    events = store.cycles.model_events()
    last = events[-1] if events else None
    if last is None or last["version"] == "base":
        return LiveCheck("base", None, False, ["the base model is live: nothing to compare it with"])
    live = last["version"]
    if last["type"] != "ModelPromoted":
        return LiveCheck(live, None, False, [f"{live} is live by a rollback: it is not judged again"])
    # The baseline is the version this promotion replaced (what users had before), which is
    # not always the metadata's parent: a human may promote an older version, or a child of a
    # version that was rolled back.
    parent = events[-2]["version"] if len(events) > 1 else "base"
    new, old = (version_figures(store, v, window, verifiers) for v in (live, parent))
    verdicts = {name: _judge(name, new, old, bound=bound, min_samples=min_samples, min_tenants=min_tenants,
                             confidence=confidence) for name in FIGURES}
    return LiveCheck(live, parent, any(v[0] for v in verdicts.values()), [v[1] for v in verdicts.values()],
                     {"live": asdict(new), "parent": asdict(old), "thumbs_down_diff": verdicts["thumbs-down rate"][2],
                      "verifier_fail_diff": verdicts["verifier failure rate"][2]})


class LiveCanary:
    """The worker's service: check the live version, roll it back when the check says so."""

    def __init__(self, settings, store):
        self.settings, self.store = settings, store
        # One check at a time (the schedule and POST /live-check), and a rollback sent once: it
        # reaches DuckDB only when the collector has read it back from tao.control.
        self._lock = threading.Lock()
        self._sent: set[tuple[str, str]] = set()  # (version, occurred_at) of promotions rolled back

    def run(self) -> dict:
        with self._lock:
            return self._run()

    def _run(self) -> dict:
        from trainer.cycle import VERIFIERS

        s = self.settings
        events = self.store.cycles.model_events()
        promotion = (events[-1]["version"], events[-1]["occurred_at"]) if events else None
        if promotion in self._sent:
            return LiveCheck(promotion[0], None, False, [f"rollback of {promotion[0]} already sent"]).as_dict()
        c = check_live(self.store, VERIFIERS, bound=s.live_bound, min_samples=s.live_min_samples,
                       min_tenants=s.live_min_tenants,
                       confidence=s.gate_confidence, window=s.live_window)
        if c.rollback:
            self._sent.add(promotion)
            reason = "live canary: " + "; ".join(r.removeprefix("ROLLBACK: ") for r in c.reasons if r.startswith("ROLLBACK"))
            rollback(s.kafka_bootstrap, s.data_dir, c.live, c.parent, s.base_model, reason, key=s.signing_key_bytes())
            log.warning("rolled back %s to %s: %s", c.live, c.parent, reason)
        else:
            log.info("live canary: %s", "; ".join(c.reasons))
        return c.as_dict()
