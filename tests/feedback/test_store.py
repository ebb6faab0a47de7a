"""Store: dedupe by event_id, positions in the same transaction, atomic Parquet snapshots."""
from __future__ import annotations

import json
import threading
import uuid

import duckdb
import pyarrow.parquet as pq
import pytest

from feedback.store import SNAPSHOT_TABLES, Store
from schemas.events import (
    ChatCompleted,
    ChatCompletedPayload,
    Choice,
    FeedbackSubmitted,
    FeedbackSubmittedPayload,
    ModelPromoted,
    ModelPromotedPayload,
    ModelRolledBack,
    ModelRolledBackPayload,
    parse_event,
)


def chat(i: int = 0) -> ChatCompleted:
    return ChatCompleted(payload=ChatCompletedPayload(
        completion_id=f"cmpl-{uuid.uuid4().hex}", model_version="v0",
        messages=[{"role": "user", "content": f"What is {i} + 1?"}], params={"temperature": 0.7},
        choices=[Choice(index=0, text=str(i + 1), finish_reason="stop")], latency_ms=12.5, task="math",
    ))


def thumbs(completion_id: str) -> FeedbackSubmitted:
    return FeedbackSubmitted(payload=FeedbackSubmittedPayload(
        feedback_id=uuid.uuid4().hex, completion_id=completion_id, kind="thumbs", value="up"))


def raw(ev) -> tuple:
    return ev, ev.to_bytes().decode()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "tao.duckdb")
    yield s
    s.close()


def count(store: Store, table: str) -> int:
    return store.query(f"SELECT count(*) FROM {table}")[0][0]


def test_rows_land_in_their_tables_with_raw(store):
    c = chat(1)
    f = thumbs(c.payload.completion_id)
    promoted = ModelPromoted(payload=ModelPromotedPayload(version="v1", artifact_path="/m/v1", parent="v0",
                                                          metrics={"win_rate": 0.6}))
    rolled = ModelRolledBack(payload=ModelRolledBackPayload(version="v0", artifact_path="/m/v0",
                                                            rolled_back_from="v1", reason="regression"))
    assert store.write_batch([raw(c), raw(f), raw(promoted), raw(rolled)], {("tao.completions", 0): 1}) == 4

    row = store.query("SELECT completion_id, response, task, prompt_tokens, raw, messages FROM completions")[0]
    assert row[:3] == (c.payload.completion_id, "2", "math")
    assert parse_event(row[4]) == c
    assert json.loads(row[5]) == [{"role": "user", "content": "What is 1 + 1?"}]
    params, choices = store.query("SELECT params, choices FROM completions")[0]
    assert json.loads(params) == {"temperature": 0.7} and json.loads(choices)[0]["text"] == "2"
    assert store.query("SELECT completion_id, kind, value FROM feedback") == [(c.payload.completion_id, "thumbs", '"up"')]
    assert store.query("SELECT type, version, parent FROM model_events ORDER BY type DESC") == [
        ("ModelRolledBack", "v0", "v1"), ("ModelPromoted", "v1", "v0")]


def test_json_columns_are_cut_from_the_raw_event_as_sent(store):
    # A raw event without params (an older producer): params '{}', the rest as sent, key order kept.
    c = chat(2)
    doc = json.loads(c.to_bytes())
    del doc["payload"]["params"]
    doc["payload"]["messages"] = [{"content": "What is 2 + 1?", "role": "user"}]
    assert store.write_batch([(c, json.dumps(doc))], {}) == 1
    messages, params, choices = store.query("SELECT messages, params, choices FROM completions")[0]
    assert params == "{}" and messages == '[{"content":"What is 2 + 1?","role":"user"}]'
    assert json.loads(choices) == doc["payload"]["choices"]


def test_dedupe_within_and_across_batches(store):
    a, b, c = chat(1), chat(2), chat(3)
    assert store.write_batch([raw(a), raw(b), raw(a)], {("t", 0): 3}) == 2
    # A replayed batch: only c is new.
    assert store.write_batch([raw(a), raw(c), raw(b), raw(c)], {("t", 0): 7}) == 1
    assert count(store, "completions") == 3
    assert store.positions() == {("t", 0): 7}


def test_positions_only_batch_and_going_backwards(store):
    # A batch of only dead-lettered records still moves the position; a broker that came
    # back empty moves it back to the start.
    assert store.write_batch([], {("t", 0): 10, ("t", 1): 4}) == 0
    assert store.write_batch([], {("t", 0): 2}) == 0
    assert store.positions() == {("t", 0): 2, ("t", 1): 4}


def test_failed_batch_stores_neither_rows_nor_positions(store):
    store.write_batch([raw(chat())], {("t", 0): 1})
    bad = chat()
    with pytest.raises(duckdb.Error):
        # A position that does not fit the column fails after the rows were inserted.
        store.write_batch([raw(bad)], {("t", 0): 2**70})
    assert count(store, "completions") == 1
    assert store.positions() == {("t", 0): 1}
    assert store.write_batch([raw(bad)], {("t", 0): 2}) == 1  # the store is usable again


def test_reopen_keeps_rows_and_positions(tmp_path):
    s = Store(tmp_path / "db.duckdb")
    ev = chat()
    s.write_batch([raw(ev)], {("t", 0): 5})
    s.close()
    s = Store(tmp_path / "db.duckdb")  # ddl() applies again to an existing file
    try:
        assert s.positions() == {("t", 0): 5}
        assert s.write_batch([raw(ev)], {("t", 0): 6}) == 0
    finally:
        s.close()


def test_concurrent_writers(store):
    def work(k: int):
        for _ in range(10):
            store.write_batch([raw(chat()) for _ in range(5)], {("t", k): 1})
            store.execute("INSERT INTO cycles (cycle_id, started_at, status) VALUES (?, now(), 'running')",
                          [uuid.uuid4().hex])
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count(store, "completions") == 200
    assert count(store, "cycles") == 40


def test_snapshot_is_complete_and_readable(store, tmp_path):
    events = [chat(i) for i in range(20)]
    store.write_batch([raw(e) for e in events] + [raw(thumbs(events[0].payload.completion_id))], {("t", 0): 21})
    store.execute("INSERT INTO cycles (cycle_id, started_at, status) VALUES ('c1', now(), 'running')")

    snaps = tmp_path / "snapshots"
    first = store.export_snapshot(snaps)
    assert first.parent == snaps and first.is_dir()
    assert sorted(p.name for p in first.iterdir()) == sorted(f"{t}.parquet" for t in SNAPSHOT_TABLES)
    assert [p for p in snaps.iterdir() if p.name.startswith(".")] == []  # no temporary left behind

    assert pq.read_table(first / "completions.parquet").num_rows == 20
    assert pq.read_table(first / "feedback.parquet").num_rows == 1
    assert pq.read_table(first / "model_events.parquet").num_rows == 0
    con = duckdb.connect()  # the trainer's view: Parquet only, never the DuckDB file
    assert con.execute(f"SELECT cycle_id FROM '{first}/cycles.parquet'").fetchall() == [("c1",)]
    raws = con.execute(f"SELECT raw FROM '{first}/completions.parquet'").fetchall()
    assert {parse_event(r).event_id for (r,) in raws} == {e.event_id for e in events}

    store.write_batch([raw(chat())], {("t", 0): 22})
    second = store.export_snapshot(snaps)
    assert second != first and sorted(snaps.iterdir())[-1] == second  # names sort by time
    assert pq.read_table(second / "completions.parquet").num_rows == 21
    assert pq.read_table(first / "completions.parquet").num_rows == 20  # old one untouched


def test_failed_snapshot_leaves_nothing(store, tmp_path, monkeypatch):
    monkeypatch.setattr("feedback.store.SNAPSHOT_TABLES", ("completions", "no_such_table"))
    snaps = tmp_path / "snapshots"
    with pytest.raises(duckdb.Error):
        store.export_snapshot(snaps)
    assert list(snaps.iterdir()) == []


def test_feedback_before_its_completion_is_kept_and_joined(store, tmp_path):
    from trainer.selection import select_prompts

    c = chat(3)
    fb = thumbs(c.payload.completion_id)
    store.write_batch([raw(fb)], {("tao.feedback", 0): 1})  # its completion is on another partition, behind
    assert count(store, "feedback") == 1 and store.feedback_pending() == 1
    store.write_batch([raw(c)], {("tao.completions", 0): 1})
    assert store.feedback_pending() == 0
    sel = select_prompts(store.export_snapshot(tmp_path / "snaps"), None, holdout_fraction=0, seed="t")
    [prompt] = sel.train
    assert prompt.prompt_id == c.payload.completion_id
    assert prompt.feedback == [{"kind": "thumbs", "value": "up", "choice_index": 0, "tenant": "anonymous"}]


def feedback_as(tenant: str, feedback_id: str, completion_id: str = "cmpl-1") -> FeedbackSubmitted:
    return FeedbackSubmitted(tenant=tenant, payload=FeedbackSubmittedPayload(
        feedback_id=feedback_id, completion_id=completion_id, kind="thumbs", value="up"))


def test_feedback_ids_are_unique_per_tenant(store):
    # Another tenant reusing your feedback_id used to drop yours (UNIQUE feedback_id, and the
    # same key in the batch's dedup), though the API had answered 202.
    mine, theirs = feedback_as("tenant-a", "fb-1"), feedback_as("tenant-b", "fb-1")
    assert store.write_batch([raw(mine), raw(theirs)], {("f", 0): 2}) == 2        # one batch
    assert store.write_batch([raw(feedback_as("tenant-c", "fb-1"))], {("f", 0): 3}) == 1  # across batches
    # The same tenant twice (another event, same feedback_id): stored once, in a batch or across.
    assert store.write_batch([raw(feedback_as("tenant-a", "fb-2")), raw(feedback_as("tenant-a", "fb-2"))],
                             {("f", 0): 5}) == 1
    assert store.write_batch([raw(feedback_as("tenant-a", "fb-1"))], {("f", 0): 6}) == 0
    assert sorted(store.query("SELECT tenant, feedback_id FROM feedback")) == [
        ("tenant-a", "fb-1"), ("tenant-a", "fb-2"), ("tenant-b", "fb-1"), ("tenant-c", "fb-1")]


# The feedback table as the DDL before per-tenant feedback ids made it.
OLD_FEEDBACK_DDL = """
CREATE TABLE feedback (
    event_id       VARCHAR PRIMARY KEY,
    feedback_id    VARCHAR NOT NULL UNIQUE,
    completion_id  VARCHAR NOT NULL,
    occurred_at    TIMESTAMPTZ NOT NULL,
    tenant         VARCHAR NOT NULL,
    kind           VARCHAR NOT NULL,
    value          JSON NOT NULL,
    choice_index   INTEGER NOT NULL,
    raw            VARCHAR NOT NULL
);
"""


def test_a_file_made_by_the_old_ddl_is_migrated(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(OLD_FEEDBACK_DDL)
    con.close()
    s = Store(path)  # the rest of the DDL applies around the old table
    try:
        old = feedback_as("tenant-a", "fb-1")
        assert s.write_batch([raw(old)], {("f", 0): 1}) == 1
    finally:
        s.close()
    # Simulate a file written entirely before: the old table with a row in it.
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE feedback")
    con.execute(OLD_FEEDBACK_DDL)
    con.execute("INSERT INTO feedback VALUES (?, 'fb-1', 'cmpl-1', now(), 'tenant-a', 'thumbs', '\"up\"', 0, ?)",
                [old.event_id, old.to_bytes().decode()])
    con.close()

    for _ in range(2):  # migrated on the first open; the second finds nothing to do
        s = Store(path)
        try:
            assert s.query("SELECT event_id, tenant, feedback_id FROM feedback") == [(old.event_id, "tenant-a", "fb-1")]
        finally:
            s.close()
    s = Store(path)
    try:
        assert s.write_batch([raw(feedback_as("tenant-b", "fb-1")), raw(feedback_as("tenant-a", "fb-1"))],
                             {("f", 0): 3}) == 1
        assert sorted(s.query("SELECT tenant FROM feedback")) == [("tenant-a",), ("tenant-b",)]
        assert s.query("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE '%before%'")[0][0] == 0
    finally:
        s.close()


def test_unstorable_rows_are_found_and_the_rest_can_be_written(store):
    """A value that got past validation but not into its column (choice_index 3e9 was one,
    before the schema bounded it): `unstorable` names exactly those rows and writes nothing."""
    from feedback.store import DATA_ERRORS

    def unbounded() -> tuple:
        ev = thumbs("cmpl-x")
        # model_copy does not validate: an event as an older, looser schema let through.
        bad = ev.model_copy(update={"payload": ev.payload.model_copy(update={"choice_index": 3_000_000_000})})
        return bad, ev.to_bytes().decode()

    good = [raw(chat(i)) for i in range(9)]
    batch = good[:4] + [unbounded()] + good[4:7] + [unbounded()] + good[7:]

    with pytest.raises(DATA_ERRORS):
        store.write_batch(batch, {("t", 0): len(batch)})
    found = store.unstorable(batch)
    assert [i for i, _ in found] == [4, 8]
    assert all("3000000000" in str(e) or "too large" in str(e) for _, e in found)
    assert count(store, "completions") == 0 and store.positions() == {}  # the search wrote nothing
    rest = [b for i, b in enumerate(batch) if i not in (4, 8)]
    assert store.write_batch(rest, {("t", 0): len(batch)}) == 9
    assert store.unstorable(rest) == []


def _table_rows(store: Store) -> dict[str, list[tuple]]:
    return {t: store.query(f"SELECT * FROM {t} ORDER BY event_id") for t in ("completions", "feedback", "model_events")}


def test_the_fast_path_writes_the_same_rows_as_pydantic(tmp_path):
    """Issue 18: the collector validates with the msgspec mirror (schemas/events_fast.py) where
    it can; every column of every row must be what the pydantic event gives."""
    import msgspec

    from schemas.events_fast import parse_event_fast
    from tests.schemas.test_events_fast import corpus

    valid = []
    for text in corpus():
        try:
            valid.append((parse_event(text), text))
        except ValueError:  # pydantic's ValidationError and UnknownSchemaVersion are ValueErrors
            continue
    fast = [(parse_event_fast(text), text) for _, text in valid]
    assert sum(isinstance(ev, msgspec.Struct) for ev, _ in fast) == len(valid) >= 40
    slow_store, fast_store = Store(tmp_path / "pydantic.duckdb"), Store(tmp_path / "fast.duckdb")
    try:
        # One event at a time: the tests' records share ids (a batch would keep the first).
        for (ev, text), (fast_ev, _) in zip(valid, fast):
            assert slow_store.write_batch([(ev, text)], {}) == fast_store.write_batch([(fast_ev, text)], {}) == 1
            slow, quick = _table_rows(slow_store), _table_rows(fast_store)
            assert sum(map(len, slow.values())) == 1 and quick == slow, text
            for s in (slow_store, fast_store):
                for table in slow:
                    s.execute(f"DELETE FROM {table}")
    finally:
        slow_store.close()
        fast_store.close()


def test_the_fast_path_gives_the_same_columns_on_random_events():
    from hypothesis import HealthCheck, given, settings

    from feedback.store import _columns_by_table
    from schemas.events_fast import decode_fast
    from tests.schemas.test_events_fast import events

    @settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(ev=events())
    def same_columns(ev):
        text = json.dumps(ev)
        fast = decode_fast(text)
        if fast is None:
            return  # pydantic's way: nothing to compare
        assert _columns_by_table([(fast, text)]) == _columns_by_table([(parse_event(text), text)])

    same_columns()
