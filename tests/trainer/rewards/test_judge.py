"""The relative LLM judge against a SCRIPTED judge endpoint: a real HTTP server on loopback
that answers OpenAI-shaped chat completions with replies each test writes. It stands in for
a judge model, whose replies we cannot make malformed, out of range or late on purpose.

The integration test at the end asks a real vLLM (set TAO_TEST_VLLM_URL, and optionally
TAO_TEST_VLLM_MODEL; otherwise the server's first model is used).
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from trainer.prompts import Candidate, Prompt
from trainer.rewards import ensemble, json_verifier
from trainer.rewards.judge import (DEFAULT_RUBRIC, MAX_CANDIDATE_CHARS, make_relative_judge, parse_scores,
                                   presentation_order)

RUBRIC = "RUBRIC-7f3a: prefer the answer that names the capital city correctly."
PROMPT = Prompt("p1", [{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "What is the capital of France?"}])
CANDS = [Candidate("Paris.", "plain"), Candidate("Lyon, I think.", "plain"), Candidate("It is Paris.", "scaffold")]


class ScriptedJudge:
    """What the endpoint answers next (status, content, delay) and every request it got."""

    def __init__(self) -> None:
        self.status = 200
        self.content = '{"scores": [9, 1, 8]}'  # or a function of the request body
        self.delay_s = 0.0
        self.raw: bytes | None = None  # a body sent as is, instead of a chat completion
        self.refuse_schema = False  # answer a request with response_format as an endpoint without it does
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.stop = threading.Event()  # cuts a scripted delay short at teardown
        self.url = ""


@pytest.fixture
def scripted_judge_endpoint():
    script = ScriptedJudge()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.requests.append({"path": self.path, "body": body})
            script.headers.append(dict(self.headers))
            script.stop.wait(script.delay_s)
            if script.refuse_schema and "response_format" in body:
                data = b'{"error": {"message": "Unrecognized request argument supplied: response_format"}}'
                self.send_response(400)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            if script.status != 200:
                payload = {"error": {"message": "scripted failure", "type": "server_error", "code": script.status}}
            else:
                content = script.content(body) if callable(script.content) else script.content
                payload = {"id": "cmpl-1", "object": "chat.completion", "model": body.get("model"),
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": content}}]}
            data = script.raw if script.raw is not None else json.dumps(payload).encode()
            try:
                self.send_response(script.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up (timeout test)

        def log_message(self, *args):  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: a free port
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield script
    finally:
        script.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def judge_for(script: ScriptedJudge, **kw):
    # Unshuffled unless a test asks: scripted replies then read in the candidates' own order.
    return make_relative_judge(script.url, "judge-model", RUBRIC, **{"shuffle": False, **kw})


def shown_texts(body: dict) -> list[str]:
    """The candidate texts in the order the judge was shown them (labels [1]..[n])."""
    user = body["messages"][1]["content"]
    answers = user.split("labelled [1] to [", 1)[1].split("]:\n\n", 1)[1].split("\n\nScore every answer", 1)[0]
    return re.split(r"\n\n\[\d+\]\n", "\n\n" + answers)[1:]


def test_good_reply_scores_every_candidate_and_the_request_holds_all_of_them(scripted_judge_endpoint):
    s = scripted_judge_endpoint
    assert judge_for(s, api_key="sk-test", max_tokens=99)(PROMPT, CANDS) == [0.9, 0.1, 0.8]
    assert len(s.requests) == 1  # the whole group in ONE call
    req = s.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["body"]["model"] == "judge-model" and req["body"]["max_tokens"] == 99
    assert s.headers[0]["Authorization"] == "Bearer sk-test"
    sent = "\n".join(m["content"] for m in req["body"]["messages"])
    assert RUBRIC in sent
    assert "What is the capital of France?" in sent and "Be brief." in sent
    for i, c in enumerate(CANDS, 1):
        assert f"[{i}]\n{c.text}" in sent
    assert '{"scores": [s1, ..., s3]}' in sent
    # The reply's shape goes along as a JSON schema: exactly 3 scores from 0 to 10.
    schema = req["body"]["response_format"]["json_schema"]["schema"]["properties"]["scores"]
    assert req["body"]["response_format"]["type"] == "json_schema"
    assert schema["minItems"] == schema["maxItems"] == 3 and schema["items"]["maximum"] == 10


def test_an_endpoint_without_structured_output_is_asked_again_without_the_schema(scripted_judge_endpoint, caplog):
    s = scripted_judge_endpoint
    s.refuse_schema = True
    judge = judge_for(s)
    assert judge(PROMPT, CANDS) == [0.9, 0.1, 0.8]
    assert judge(PROMPT, CANDS) == [0.9, 0.1, 0.8]
    # One refusal, then never with the schema again.
    assert ["response_format" in r["body"] for r in s.requests] == [True, False, False]
    assert "refuses response_format" in caplog.text


def test_structured_output_off_and_a_smaller_group_budget(scripted_judge_endpoint):
    s = scripted_judge_endpoint
    s.content = json.dumps({"scores": [5] * 4})
    cands = [Candidate("y" * 3000, "plain") for _ in range(4)]
    assert judge_for(s, structured=False, group_chars=2000)(PROMPT, cands) == [0.5] * 4
    body = s.requests[0]["body"]
    assert "response_format" not in body
    assert len(body["messages"][1]["content"]) < 4 * 600 + 2000  # 500 characters a candidate, not 3000


def test_base_url_with_v1_and_reply_with_words_around_the_object(scripted_judge_endpoint):
    s = scripted_judge_endpoint
    s.content = 'Comparing them: [1] is right.\n```json\n{"scores": [10, 0, 7.5]}\n```'
    assert judge_for(s, api_key=None)(PROMPT, CANDS) == [1.0, 0.0, 0.75]
    assert make_relative_judge(s.url + "/v1/", "m", RUBRIC, shuffle=False)(PROMPT, CANDS) == [1.0, 0.0, 0.75]
    assert [r["path"] for r in s.requests] == ["/v1/chat/completions"] * 2
    assert "Authorization" not in s.headers[0]


def test_out_of_range_scores_are_clamped(scripted_judge_endpoint):
    scripted_judge_endpoint.content = '{"scores": [11, -3, 10]}'
    assert judge_for(scripted_judge_endpoint)(PROMPT, CANDS) == [1.0, 0.0, 1.0]


@pytest.mark.parametrize("content,reason", [
    ('{"scores": [9, 1]}', "2 scores for 3 candidates"),         # a candidate missing: whose score is gone?
    ('{"scores": [9, 1, 8, 5]}', "4 scores for 3 candidates"),
    ('{"scores": [9, 1, 8}', "malformed JSON"),
    ("Answer 1 is best.", "no JSON object"),
    ('{"ranking": [1, 3, 2]}', 'no "scores" list'),
    ('{"scores": "9, 1, 8"}', 'no "scores" list'),
    ("", "no JSON object"),
])
def test_unusable_reply_gives_no_opinion_on_any_candidate(scripted_judge_endpoint, caplog, content, reason):
    scripted_judge_endpoint.content = content
    with caplog.at_level(logging.WARNING, logger="trainer.rewards.judge"):
        assert judge_for(scripted_judge_endpoint)(PROMPT, CANDS) == [None, None, None]
    assert reason in caplog.text


def test_a_non_numeric_score_is_no_opinion_for_that_candidate_only(scripted_judge_endpoint, caplog):
    scripted_judge_endpoint.content = '{"scores": [9, "high", NaN]}'
    with caplog.at_level(logging.WARNING, logger="trainer.rewards.judge"):
        assert judge_for(scripted_judge_endpoint)(PROMPT, CANDS) == [0.9, None, None]
    assert "unusable score for candidates [2, 3]" in caplog.text


def test_http_error_gives_no_opinion(scripted_judge_endpoint, caplog):
    scripted_judge_endpoint.status = 500
    with caplog.at_level(logging.WARNING, logger="trainer.rewards.judge"):
        assert judge_for(scripted_judge_endpoint)(PROMPT, CANDS) == [None, None, None]
    assert "HTTP 500" in caplog.text and "scripted failure" in caplog.text


def test_timeout_gives_no_opinion_without_waiting_for_the_reply(scripted_judge_endpoint, caplog):
    scripted_judge_endpoint.delay_s = 5
    t = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="trainer.rewards.judge"):
        assert judge_for(scripted_judge_endpoint, timeout_s=0.3)(PROMPT, CANDS) == [None, None, None]
    assert time.monotonic() - t < 2
    assert "no reply within 0.3 s" in caplog.text


def test_unreachable_endpoint_gives_no_opinion(scripted_judge_endpoint, caplog):
    url = scripted_judge_endpoint.url.rsplit(":", 1)[0] + ":1"  # nothing listens on port 1
    with caplog.at_level(logging.WARNING, logger="trainer.rewards.judge"):
        assert make_relative_judge(url, "m", RUBRIC, timeout_s=2)(PROMPT, CANDS) == [None, None, None]
    assert "request failed" in caplog.text


@pytest.mark.parametrize("raw,content", [
    (b"<html>Bad gateway</html>", None),
    (b'{"object": "list", "data": []}', None),
    (None, None),  # a chat completion whose message content is null
])
def test_reply_that_is_not_a_usable_chat_completion_gives_no_opinion(scripted_judge_endpoint, raw, content):
    scripted_judge_endpoint.raw, scripted_judge_endpoint.content = raw, content
    assert judge_for(scripted_judge_endpoint)(PROMPT, CANDS) == [None, None, None]


def test_long_candidates_are_cut_to_fit_the_judges_context(scripted_judge_endpoint):
    s = scripted_judge_endpoint
    s.content = json.dumps({"scores": [5] * 12})
    cands = [Candidate(f"answer {i} " + "x" * 50_000 + f" END{i}", "plain") for i in range(12)]
    assert judge_for(s)(PROMPT, cands) == [0.5] * 12
    sent = s.requests[0]["body"]["messages"][1]["content"]
    assert len(sent) < 12 * MAX_CANDIDATE_CHARS
    for i in range(12):
        assert f"[{i + 1}]\nanswer {i} " in sent and f"END{i}" not in sent
    assert "more characters cut" in sent


def test_no_candidates_no_call(scripted_judge_endpoint):
    assert judge_for(scripted_judge_endpoint)(PROMPT, []) == []
    assert scripted_judge_endpoint.requests == []


def test_judge_is_a_reward_source_for_the_ensemble(scripted_judge_endpoint):
    scripted_judge_endpoint.content = '{"scores": [10, 0, 6]}'
    scores, detail = ensemble({"judge": (1.0, judge_for(scripted_judge_endpoint)), "verifier": (1.0, json_verifier)},
                              PROMPT, CANDS)
    assert scores == [1.0, 0.0, 0.6]
    assert detail[2] == {"judge": 0.6}


def test_shuffled_candidates_get_their_own_scores_back(scripted_judge_endpoint):
    s = scripted_judge_endpoint
    # A judge that reads the answers: 9 for an answer naming Paris, 1 otherwise, by label.
    s.content = lambda body: json.dumps({"scores": [9 if "Paris" in t else 1 for t in shown_texts(body)]})
    cands = [Candidate(f"{city} (answer {i})", "plain") for i, city in
             enumerate(["Paris", "Lyon", "Lyon", "Paris", "Nice", "Paris", "Lyon", "Paris"])]
    assert judge_for(s, shuffle=True)(PROMPT, cands) == [0.9 if "Paris" in c.text else 0.1 for c in cands]
    shown = shown_texts(s.requests[0]["body"])
    assert sorted(shown) == sorted(c.text for c in cands)  # every candidate, once
    assert shown != [c.text for c in cands]  # in an order of its own
    # The same group is shown the same way every time (seeded by its text, not by chance).
    judge_for(s, shuffle=True)(PROMPT, cands)
    assert shown_texts(s.requests[1]["body"]) == shown
    assert presentation_order(PROMPT, cands) == presentation_order(PROMPT, list(cands))


def test_a_judge_that_scores_by_position_favours_no_strategy_when_shuffled(scripted_judge_endpoint):
    """SmolLM2-135M judging its own candidates replied 1, 2, 3, ... whatever the answers were.
    Explore lists a group by strategy in a fixed order, so unshuffled the last strategy always won."""
    s = scripted_judge_endpoint
    s.content = lambda body: json.dumps({"scores": list(range(1, len(shown_texts(body)) + 1))})
    strategies = ["plain", "scaffold", "fewshot", "stepwise"]

    def winners(shuffle: bool) -> list[str]:
        judge = judge_for(s, shuffle=shuffle)
        out = []
        for g in range(40):
            prompt = Prompt(f"p{g}", [{"role": "user", "content": f"Question {g}?"}])
            cands = [Candidate(f"{st} answer to {g}", st) for st in strategies]
            scores = judge(prompt, cands)
            out.append(cands[scores.index(max(scores))].strategy)
        return out

    assert set(winners(shuffle=False)) == {"stepwise"}
    shuffled = winners(shuffle=True)
    assert all(shuffled.count(st) >= 4 for st in strategies), shuffled  # ~10 each of 40


def test_failures_stay_no_opinion_when_shuffled(scripted_judge_endpoint):
    s = scripted_judge_endpoint
    s.content = '{"scores": [9, "high", 8]}'
    scores = judge_for(s, shuffle=True)(PROMPT, CANDS)
    assert sorted(scores, key=lambda x: (x is None, x)) == [0.8, 0.9, None]
    s.content = '{"scores": [9, 1]}'
    assert judge_for(s, shuffle=True)(PROMPT, CANDS) == [None, None, None]


@pytest.mark.parametrize("content,expected", [
    ('{"scores": [0, 10]}', [0.0, 1.0]),
    ('{"scores": [true, 3]}', [None, 0.3]),        # a bool is not a score
    ('{"scores": [Infinity, 3]}', [None, 0.3]),
    ('{"scores": [null, 3]}', [None, 0.3]),
    ('[{"scores": [1, 2]}]', [0.1, 0.2]),          # first '{' to last '}' finds the object in the list
])
def test_parse_scores(content, expected):
    assert parse_scores(content, 2)[0] == expected


@pytest.mark.integration
@pytest.mark.skipif(not os.environ.get("TAO_TEST_VLLM_URL"), reason="set TAO_TEST_VLLM_URL to a running vLLM")
def test_real_vllm_judge():
    url = os.environ["TAO_TEST_VLLM_URL"].rstrip("/").removesuffix("/v1")
    model = os.environ.get("TAO_TEST_VLLM_MODEL") or httpx.get(f"{url}/v1/models", timeout=30).json()["data"][0]["id"]
    cands = [Candidate("Paris.", "plain"), Candidate("The capital of France is Berlin.", "plain"),
             Candidate("", "plain")]
    scores = make_relative_judge(url, model, DEFAULT_RUBRIC, timeout_s=120)(PROMPT, cands)
    # A small model may well reply with something unusable; the judge must still answer in shape.
    assert len(scores) == 3
    assert all(s is None or 0.0 <= s <= 1.0 for s in scores)
