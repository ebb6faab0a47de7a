"""The select stage on real Parquet snapshots exported by a real DuckDB Store."""
import dataclasses
import json
import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from feedback.store import Store
from schemas.events import ChatCompleted, ChatCompletedPayload, FeedbackSubmitted, FeedbackSubmittedPayload
from trainer.prompts import Prompt
from trainer.selection import NearDupIndex, in_holdout, infer_task, jaccard, select_prompts

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
WORDS = ("apple river stone cloud budget engine garden silver market winter paper forest signal harbor "
         "lemon copper orbit canvas tunnel meadow pixel anchor velvet summit").split()


def completion(cid, text, *, at=0, tenant="t-a", task=None, answer="ok", system=None):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    ev = ChatCompleted(occurred_at=T0 + timedelta(seconds=at), tenant=tenant, payload=ChatCompletedPayload(
        completion_id=cid, model_version="base", messages=messages, choices=[{"index": 0, "text": answer}],
        latency_ms=1.0, task=task))
    return ev, ev.model_dump_json()


def feedback(cid, kind, value, at=0):
    ev = FeedbackSubmitted(occurred_at=T0 + timedelta(seconds=at), payload=FeedbackSubmittedPayload(
        feedback_id=f"f-{cid}-{kind}", completion_id=cid, kind=kind, value=value))
    return ev, ev.model_dump_json()


def distinct_text(i: int) -> str:
    rng = random.Random(i)
    return f"Request {i}: " + " ".join(rng.choice(WORDS) for _ in range(12))


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "tao.duckdb")
    yield s
    s.close()


def snapshot(store, tmp_path):
    return store.export_snapshot(tmp_path / "snaps")


def ids(prompts):
    return [p.prompt_id for p in prompts]


# Off switches, so each test looks at one thing.
PLAIN = dict(limit=1000, replay_fraction=0.0, tenant_cap=1.0, holdout_fraction=0.0, near_dup_threshold=0.9, seed="s")


def test_new_prompts_since_the_watermark_plus_a_seeded_replay_sample(store, tmp_path):
    store.write_batch([completion(f"old{i}", distinct_text(i), at=i) for i in range(20)], {})
    first = select_prompts(snapshot(store, tmp_path), None, **{**PLAIN, "replay_fraction": 0.5})
    assert ids(first.train) == [f"old{i}" for i in range(20)]
    assert first.stats["new"] == 20 and first.stats["replayed"] == 0  # nothing older to replay yet
    assert datetime.fromisoformat(first.watermark) == T0 + timedelta(seconds=19)

    store.write_batch([completion(f"new{i}", distinct_text(100 + i), at=100 + i) for i in range(10)], {})
    snap = snapshot(store, tmp_path)
    sel = select_prompts(snap, first.watermark, **{**PLAIN, "replay_fraction": 0.5})
    new = [i for i in ids(sel.train) if i.startswith("new")]
    replayed = [i for i in ids(sel.train) if i.startswith("old")]
    assert new == [f"new{i}" for i in range(10)]
    assert len(replayed) == 5 and sel.stats["replayed"] == 5 and sel.stats["new"] == 10
    assert datetime.fromisoformat(sel.watermark) == T0 + timedelta(seconds=109)
    again = select_prompts(snap, first.watermark, **{**PLAIN, "replay_fraction": 0.5})
    assert ids(again.train) == ids(sel.train)  # seeded: the same cycle replays the same rows

    nothing = select_prompts(snap, sel.watermark, **{**PLAIN, "replay_fraction": 0.5})
    assert nothing.train == [] and nothing.watermark is None and nothing.stats["replayed"] == 0


def test_feedback_and_served_answer_are_joined(store, tmp_path):
    store.write_batch([completion("c1", "hello there", answer="served!"), feedback("c1", "thumbs", "down", 1),
                       feedback("c1", "correction", "better", 2), completion("c2", "other", at=3)], {})
    sel = select_prompts(snapshot(store, tmp_path), None, **PLAIN)
    p = sel.train[0]
    assert p.served == "served!" and p.messages == [{"role": "user", "content": "hello there"}]
    assert p.feedback == [{"kind": "thumbs", "value": "down", "choice_index": 0, "tenant": "anonymous"},
                          {"kind": "correction", "value": "better", "choice_index": 0, "tenant": "anonymous"}]
    assert sel.train[1].feedback == []


def test_exact_and_near_duplicates_are_removed_keeping_the_earliest(store, tmp_path):
    base = ("Summarize the quarterly revenue report for the finance team and list the three biggest "
            "risks the board should discuss at the next meeting in plain words")
    store.write_batch([
        completion("c1", base, at=0),
        completion("c2", "  " + base.upper().replace(" ", "   ") + " ", at=1),  # exact after normalizing
        completion("c3", base + " please", at=2),                                 # one word more: near
        completion("c4", "Summarize the quarterly revenue report for the marketing team and list the three "
                         "best ideas the team should try at the next offsite in short bullet points", at=3),
        completion("c5", base, at=4, system="You answer in French."),             # another system prompt
    ], {})
    snap = snapshot(store, tmp_path)
    sel = select_prompts(snap, None, **PLAIN)
    # c5 differs only outside the user text, which near-duplicate removal compares.
    assert ids(sel.train) == ["c1", "c4"]
    assert sel.stats["exact_dups"] == 1 and sel.stats["near_dups"] == 2
    strict = select_prompts(snap, None, **{**PLAIN, "near_dup_threshold": 0.99})
    assert ids(strict.train) == ["c1", "c3", "c4"]


def test_a_replayed_prompt_never_duplicates_a_new_one(store, tmp_path):
    store.write_batch([completion(f"old{i}", distinct_text(i), at=i) for i in range(4)], {})
    since = select_prompts(snapshot(store, tmp_path), None, **PLAIN).watermark
    store.write_batch([completion(f"new{i}", distinct_text(i), at=100 + i) for i in range(4)], {})  # same texts
    sel = select_prompts(snapshot(store, tmp_path), since, **{**PLAIN, "replay_fraction": 1.0})
    assert ids(sel.train) == [f"new{i}" for i in range(4)] and sel.stats["exact_dups"] == 4


def test_near_dup_index_matches_brute_force():
    rng = random.Random(7)
    pool = [frozenset(rng.sample(range(40), rng.randint(1, 25))) for _ in range(150)]
    pool += [s | {100 + k} for k, s in enumerate(pool[:50])]  # many close pairs
    for t in (0.5, 0.8, 0.9, 1.0):
        index = NearDupIndex(t)
        for s in pool:
            assert index.has_near(s) == any(jaccard(s, o) >= t for o in index.sets), (t, sorted(s))
            index.add(s)


def test_secrets_and_pii_are_scrubbed_everywhere(store, tmp_path):
    secrets = ["jane.doe@example.com", "415-555-0132", "4111 1111 1111 1111", "sk-proj-Zx9abcdefghij0123456789",
               "AKIAIOSFODNN7EXAMPLE", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "9f86d081884c7d659a2feaa0c55a"]
    text = ("I am jane.doe@example.com, call 415-555-0132. Card 4111 1111 1111 1111. My key is "
            "sk-proj-Zx9abcdefghij0123456789 and AKIAIOSFODNN7EXAMPLE, token=9f86d081884c7d659a2feaa0c55a. "
            "Order 12345678 on 2024-03-15: 12 widgets at 45.00 each.")
    store.write_batch([
        completion("c1", text, answer="Noted ghp_abcdefghijklmnopqrstuvwxyz0123456789 for 45.00"),
        feedback("c1", "correction", "Reply to jane.doe@example.com about 12 widgets", 1),
        feedback("c1", "comment", "my number is 415-555-0132", 2),
        completion("c2", "What year did the 12 widgets ship?", at=3),
    ], {})
    sel = select_prompts(snapshot(store, tmp_path), None, **PLAIN)
    dumped = json.dumps(dataclasses.asdict(sel))
    for s in secrets:
        assert s not in dumped
    for kept in ("Order 12345678", "2024-03-15", "12 widgets at 45.00 each", "for 45.00", "about 12 widgets"):
        assert kept in dumped
    p = sel.train[0]
    for tag in ("<EMAIL>", "<PHONE>", "<CARD>", "<SECRET>"):
        assert tag in p.messages[0]["content"]
    assert p.served == "Noted <SECRET> for 45.00"
    assert [f["value"] for f in p.feedback] == ["Reply to <EMAIL> about 12 widgets", "my number is <PHONE>"]
    assert sel.stats["scrubbed"] == 1 and sel.stats["redactions"] == 9


def test_one_tenant_cannot_dominate(store, tmp_path):
    rows = [completion(f"b{i}", distinct_text(100 + i), at=100 + i, tenant="t-b") for i in range(5)]
    rows += [completion(f"c{i}", distinct_text(200 + i), at=200 + i, tenant="t-c") for i in range(5)]
    rows += [completion(f"a{i}", distinct_text(i), at=300 + i, tenant="t-big") for i in range(40)]  # the newest
    store.write_batch(rows, {})
    snap = snapshot(store, tmp_path)
    sel = select_prompts(snap, None, **{**PLAIN, "tenant_cap": 0.5})
    assert sel.stats["tenants"] == {"t-big": 10, "t-b": 5, "t-c": 5}
    assert sel.stats["capped"] == 30
    assert {i for i in ids(sel.train) if i.startswith("a")} == {f"a{i}" for i in range(30, 40)}  # newest kept
    # A limit the big tenant alone could fill: the cap still leaves room for the others.
    limited = select_prompts(snap, None, **{**PLAIN, "tenant_cap": 0.5, "limit": 20})
    assert limited.stats["tenants"] == {"t-big": 10, "t-b": 5, "t-c": 5}
    # And cutting to the limit cannot tip the balance back: still at most half for anyone.
    small = select_prompts(snap, None, **{**PLAIN, "tenant_cap": 0.5, "limit": 8})
    assert len(small.train) <= 8 and max(small.stats["tenants"].values()) <= len(small.train) / 2


def test_a_single_tenant_is_capped_at_its_share_of_the_limit(store, tmp_path):
    """One key that sent all the traffic still supplies at most cap x limit prompts of a cycle."""
    store.write_batch([completion(f"a{i}", distinct_text(i), at=i) for i in range(30)], {})
    snap = snapshot(store, tmp_path)
    roomy = select_prompts(snap, None, **{**PLAIN, "tenant_cap": 0.5})  # limit 1000: 30 is under 500
    assert len(roomy.train) == 30 and roomy.stats["capped"] == 0
    tight = select_prompts(snap, None, **{**PLAIN, "tenant_cap": 0.5, "limit": 20})
    assert ids(tight.train) == [f"a{i}" for i in range(20, 30)] and tight.stats["capped"] == 10


def test_heldout_comes_from_every_tenant_in_proportion_and_capped(store, tmp_path):
    rows = [completion(f"big{i}", distinct_text(i), at=i, tenant="t-big") for i in range(300)]
    rows += [completion(f"small{i}", distinct_text(1000 + i), at=1000 + i, tenant="t-small") for i in range(100)]
    rows += [completion(f"tiny{i}", distinct_text(2000 + i), at=2000 + i, tenant="t-tiny") for i in range(4)]
    store.write_batch(rows, {})
    snap = snapshot(store, tmp_path)
    # limit 60, held-out 0.5: 60 held-out seats for about 200 held-out prompts.
    sel = select_prompts(snap, None, **{**PLAIN, "holdout_fraction": 0.5, "limit": 60, "tenant_cap": 1.0})
    held = Counter(i.rstrip("0123456789") for i in ids(sel.heldout))
    assert sum(held.values()) == 60
    assert 40 <= held["big"] <= 48 and 12 <= held["small"] <= 18  # about 3 : 1, the traffic's proportion
    capped = select_prompts(snap, None, **{**PLAIN, "holdout_fraction": 0.5, "limit": 60, "tenant_cap": 0.5})
    held = Counter(i.rstrip("0123456789") for i in ids(capped.heldout))
    assert held["big"] <= 30 and held["small"] >= 15 and held["tiny"] >= 1


def test_limit_keeps_the_newest(store, tmp_path):
    store.write_batch([completion(f"a{i}", distinct_text(i), at=i) for i in range(30)], {})
    sel = select_prompts(snapshot(store, tmp_path), None, **{**PLAIN, "limit": 10})
    assert ids(sel.train) == [f"a{i}" for i in range(20, 30)] and sel.stats["over_limit"] == 20


def test_holdout_is_stable_and_about_the_asked_fraction(store, tmp_path):
    store.write_batch([completion(f"c{i}", distinct_text(i), at=i) for i in range(200)], {})
    snap = snapshot(store, tmp_path)
    args = {**PLAIN, "holdout_fraction": 0.2}
    a, b = select_prompts(snap, None, **args), select_prompts(snap, None, **args)
    assert ids(a.heldout) == ids(b.heldout) and ids(a.train) == ids(b.train)
    assert 20 <= len(a.heldout) <= 60 and len(a.train) + len(a.heldout) == 200
    assert not set(ids(a.heldout)) & set(ids(a.train))

    # The same prompts sent again later (new ids, other spacing) fall on the same side.
    store.write_batch([completion(f"again{i}", distinct_text(i) + "  ", at=1000 + i) for i in range(200)], {})
    later = select_prompts(snapshot(store, tmp_path), a.watermark, **args)
    assert {i.replace("again", "c") for i in ids(later.heldout)} == set(ids(a.heldout))

    other_seed = select_prompts(snap, None, **{**args, "seed": "another"})
    assert set(ids(other_seed.heldout)) != set(ids(a.heldout))


def test_holdout_hash_depends_on_the_prompt_not_its_id():
    msgs = [{"role": "user", "content": "Extract the fields name and city from: Ann, Oslo"}]
    sides = {in_holdout(Prompt(f"id{i}", msgs), "s", 0.5) for i in range(20)}
    assert len(sides) == 1
    assert not in_holdout(Prompt("x", msgs), "s", 0.0) and in_holdout(Prompt("x", msgs), "s", 1.0)


@pytest.mark.parametrize("text, task", [
    ("Extract the fields customer, item and total from: Ann bought 2 lamps for 45.00", "extract_json"),
    ("Write a SQL query that counts orders per customer", "sql"),
    ("Given the table orders(id, customer, total), write a query returning the top 5 customers", "sql"),
    ("SELECT name FROM users WHERE age > 30 -- why is this slow?", "sql"),
    ("Tom has 3 apples and buys 5 more. How many apples does he have?", "math"),
    ("What is 17 * 23?", "math"),
    ("A train travels 120 km in 1.5 hours. Calculate its average speed.", "math"),
    ("What is the capital of France in 2024?", "general"),
    ("Write a haiku about autumn leaves", "general"),
    ("Summarize the events of 2023-03-15 in 3 lines", "general"),
])
def test_task_inference(text, task):
    assert infer_task(text) == task


def test_task_tag_from_metadata_first_then_inferred(store, tmp_path):
    store.write_batch([
        completion("c1", "Write a haiku about autumn leaves", task="poetry"),
        completion("c2", "Extract the fields name and city from: Ann lives in Oslo", at=1),
        completion("c3", "Tom has 3 apples and buys 5 more. How many apples now?", at=2),
        completion("c4", "Tell me a joke", at=3),
    ], {})
    sel = select_prompts(snapshot(store, tmp_path), None, **PLAIN)
    assert [p.task for p in sel.train] == ["poetry", "extract_json", "math", "general"]
    assert sel.stats["tasks"] == {"poetry": 1, "extract_json": 1, "math": 1, "general": 1}


def test_limit_keeps_a_share_for_replay_and_bounds_the_heldout_side(store, tmp_path):
    store.write_batch([completion(f"old{i}", distinct_text(i), at=i) for i in range(20)], {})
    since = select_prompts(snapshot(store, tmp_path), None, **PLAIN).watermark
    store.write_batch([completion(f"new{i}", distinct_text(100 + i), at=100 + i) for i in range(20)], {})
    snap = snapshot(store, tmp_path)
    sel = select_prompts(snap, since, **{**PLAIN, "replay_fraction": 0.5, "limit": 12})
    assert sum(i.startswith("old") for i in ids(sel.train)) == 4  # 12 * 0.5 / 1.5
    assert [i for i in ids(sel.train) if i.startswith("new")] == [f"new{i}" for i in range(12, 20)]
    held = select_prompts(snap, None, **{**PLAIN, "holdout_fraction": 0.5, "limit": 4})
    assert len(held.train) == 4 and len(held.heldout) == 4


def test_the_requests_contract_and_the_served_tool_calls_reach_the_prompt_scrubbed(store, tmp_path):
    tools = [{"type": "function", "function": {"name": "notify", "description": "mail ops@example.com",
                                               "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}}}]
    fmt = {"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}}}
    ev = ChatCompleted(occurred_at=T0, payload=ChatCompletedPayload(
        completion_id="c-tools", model_version="base", messages=[{"role": "user", "content": "Tell ops the disk is full"}],
        params={"tools": tools, "tool_choice": "auto", "response_format": fmt, "temperature": 0.2},
        choices=[{"index": 0, "text": "", "finish_reason": "tool_calls",
                  "tool_calls": [{"id": "call_1", "name": "notify", "arguments": '{"to": "ops@example.com"}'}]}],
        latency_ms=1.0))
    store.write_batch([(ev, ev.model_dump_json()), completion("c-plain", distinct_text(1), at=1)], {})
    sel = select_prompts(snapshot(store, tmp_path), None, **PLAIN)
    by_id = {p.prompt_id: p for p in sel.train}
    p = by_id["c-tools"]
    assert set(p.contract) == {"tools", "tool_choice", "response_format"}  # sampling parameters are not contract
    assert p.contract["response_format"] == fmt and p.contract["tools"][0]["function"]["name"] == "notify"
    assert "ops@example.com" not in json.dumps(p.contract) and "ops@example.com" not in json.dumps(p.served_tool_calls)
    assert p.served_tool_calls[0]["name"] == "notify" and p.served == ""
    assert by_id["c-plain"].contract == {} and by_id["c-plain"].served_tool_calls == []


def test_corrections_of_the_same_question_from_other_tenants_join_the_kept_prompt(store, tmp_path):
    """The feedback API lets a key correct only its own completions, so two tenants vouch for
    one correction by asking the same question: the duplicate's correction (not its thumbs,
    which judged another served answer) joins the prompt that is kept."""
    from trainer.rewards.feedback import corroborated

    def fb(cid, kind, value, at, tenant):
        ev = FeedbackSubmitted(occurred_at=T0 + timedelta(seconds=at), tenant=tenant, payload=FeedbackSubmittedPayload(
            feedback_id=f"f-{cid}-{kind}", completion_id=cid, kind=kind, value=value))
        return ev, ev.model_dump_json()

    store.write_batch([completion("a1", "What is the capital of Peru?", at=1, tenant="t-a"),
                       completion("b1", "what is the capital  of Peru?", at=2, tenant="t-b"),
                       fb("a1", "correction", "Lima", 3, "t-a"), fb("b1", "correction", "Lima", 4, "t-b"),
                       fb("b1", "thumbs", "down", 5, "t-b")], {})
    sel = select_prompts(snapshot(store, tmp_path), None, **PLAIN)
    assert ids(sel.train) == ["a1"] and sel.stats["exact_dups"] == 1
    p = sel.train[0]
    assert [(f["kind"], f["tenant"]) for f in p.feedback] == [("correction", "t-a"), ("correction", "t-b")]
    assert corroborated(p, "Lima", 2) and not corroborated(p, "Lima", 3)


def test_the_heldout_limit_keeps_the_proportions_in_what_the_gate_sees(store, tmp_path):
    rows = [completion(f"big{i}", distinct_text(i), at=i, tenant="t-big") for i in range(150)]
    rows += [completion(f"small{i}", distinct_text(1000 + i), at=1000 + i, tenant="t-small") for i in range(50)]
    store.write_batch(rows, {})
    sel = select_prompts(snapshot(store, tmp_path), None, **{**PLAIN, "holdout_fraction": 0.5, "limit": 100,
                                                             "heldout_limit": 20})
    held = Counter(i.rstrip("0123456789") for i in ids(sel.heldout))
    assert sum(held.values()) == 20 and 13 <= held["big"] <= 17 and 3 <= held["small"] <= 7


def test_earlier_heldout_prompts_fill_the_gates_free_seats_and_never_train(store, tmp_path):
    # Cycle 1: 100 prompts, about 20 held out. Cycle 2: 30 new prompts, about 6 held out;
    # the gate's 20 seats are filled with cycle 1's held-out prompts, newest first.
    store.write_batch([completion(f"one{i}", distinct_text(i), at=i) for i in range(100)], {})
    args = {**PLAIN, "holdout_fraction": 0.2, "limit": 80}
    first = select_prompts(snapshot(store, tmp_path), None, **args)
    assert first.stats["heldout_earlier"] == 0  # nothing earlier in a first cycle
    store.write_batch([completion(f"two{i}", distinct_text(1000 + i), at=1000 + i) for i in range(30)], {})
    # The first cycle's held-out prompts asked again (a new id): held out again, no seat twice.
    store.write_batch([completion(f"again{i}", distinct_text(int(i[3:])), at=2000 + k)
                       for k, i in enumerate(ids(first.heldout)[:2])], {})
    second = select_prompts(snapshot(store, tmp_path), first.watermark, **args)
    new_held = [i for i in ids(second.heldout) if not i.startswith("one")]
    earlier = [i for i in ids(second.heldout) if i.startswith("one")]
    assert len(second.heldout) == 20 and second.stats["heldout_earlier"] == len(earlier) == 20 - len(new_held)
    # Held out then, held out now (never trained on); a repeat takes one seat; the newest first.
    held_then = [f"one{i}" for i in range(100)
                 if in_holdout(Prompt("x", [{"role": "user", "content": distinct_text(i)}]), "s", 0.2)]
    repeated = {i.replace("again", "one") for i in new_held if i.startswith("again")}
    assert len(repeated) == 2 and not repeated & set(earlier)
    assert sorted(earlier) == sorted([i for i in held_then if i not in repeated][-len(earlier):])
    assert all(i.startswith("two") for i in ids(second.train))
    # A cycle whose own held-out prompts fill the seats compares on those alone.
    full = select_prompts(snapshot(store, tmp_path), first.watermark, **{**args, "heldout_limit": 3})
    assert len(full.heldout) == 3 and full.stats["heldout_earlier"] == 0


def test_earlier_heldout_prompts_never_push_this_cycles_own_out(store, tmp_path):
    # This cycle's held-out prompts are all one tenant's; earlier ones are another's. A tenant
    # cap over both together would drop some of this cycle's own for the earlier ones.
    store.write_batch([completion(f"b{i}", distinct_text(i), at=i, tenant="t-b") for i in range(100)], {})
    args = {**PLAIN, "holdout_fraction": 0.2, "limit": 80, "tenant_cap": 0.5}
    first = select_prompts(snapshot(store, tmp_path), None, **args)
    store.write_batch([completion(f"a{i}", distinct_text(500 + i), at=500 + i, tenant="t-a") for i in range(60)], {})
    second = select_prompts(snapshot(store, tmp_path), first.watermark, **args)
    own = [i for i in range(500, 560)
           if in_holdout(Prompt("x", [{"role": "user", "content": distinct_text(i)}]), "s", 0.2)]
    assert 10 < len(own) < 20  # more than a 0.5 cap of 20 seats would leave them
    held = ids(second.heldout)
    assert sorted(int(i[1:]) for i in held if i.startswith("a")) == [i - 500 for i in own]
    assert len(held) == 20 and second.stats["heldout_earlier"] == 20 - len(own)
    assert second.stats["heldout_over_limit"] == 0 and second.stats["replayed"] == 0
