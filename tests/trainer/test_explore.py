import json

import pytest

from trainer.explore import (as_call_candidate, fewshot_jobs, final_answer, pick_exemplars, request_seed,
                             round_one_jobs, scaffold, stepwise, task_shape)
from trainer.prompts import Candidate, Prompt, answer_turn

EXTRACT = "Extract the fields name, city from the text below. Reply with only a JSON object.\nText: Ann lives in Oslo."


def p(pid, text=EXTRACT, task="extract_json"):
    return Prompt(pid, [{"role": "user", "content": text}], task)


def test_scaffold_names_the_keys_and_leaves_the_prompt_intact():
    msgs, params = scaffold(p("a"))
    assert msgs[0]["role"] == "system" and "name, city" in msgs[0]["content"]
    assert msgs[-1]["content"].startswith(EXTRACT) and '{"name": "...", "city": "..."}' in msgs[-1]["content"]
    assert params["temperature"] == 0.7


def test_stepwise_keeps_only_the_final_answer():
    msgs, _ = stepwise(p("a", "What is 3 * 4?", "math"))
    assert "Answer:" in msgs[0]["content"]
    assert final_answer("stepwise", "3 times 4 is 12.\nAnswer: 12") == "12"
    assert final_answer("stepwise", "Step 1... Final answer: {\"a\": 1}") == '{"a": 1}'
    assert final_answer("stepwise", "no marker here") == "no marker here"
    assert final_answer("plain", "Answer: 12") == "Answer: 12"  # other strategies are taken whole


def test_fewshot_uses_another_prompts_best_answer_of_the_same_shape():
    prompts = [p("a"), p("b"), p("c", "What is 2+2?", "math")]
    best = {"a": (Candidate('{"name": "Ann", "city": "Oslo"}', "plain"), 1.0), "b": (Candidate("meh", "plain"), 0.3),
            "c": (Candidate("4", "plain"), 0.95)}
    ex = pick_exemplars(prompts, best, min_score=0.9)
    assert [e[0].prompt_id for e in ex[("keys", "city", "name")]] == ["a"]
    assert [e[0].prompt_id for e in ex[("task", "math")]] == ["c"]
    jobs = fewshot_jobs(prompts, ex)
    # a and c have no exemplar other than themselves; b learns from a.
    assert [(j[0].prompt_id, j[1]) for j in jobs] == [("b", "fewshot")]
    msgs = jobs[0][2]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == '{"name": "Ann", "city": "Oslo"}' and msgs[2]["content"] == EXTRACT


def test_exemplars_are_shared_by_the_keys_asked_for_whatever_the_wording_or_tag():
    # Most clients send no task tag, and people word the same request many ways: the same
    # keys make the same kind of task; other keys do not.
    other_words = p("b", "Put the city and name of this note into JSON.\nBo moved to Rome.", None)
    other_keys = p("c", "Return a JSON object with the keys title, year for: Dune (1965).", None)
    best = {"a": (Candidate('{"name": "Ann", "city": "Oslo"}', "scaffold"), 1.0)}
    ex = pick_exemplars([p("a"), other_words, other_keys], best, min_score=0.9)
    assert task_shape(other_words) == task_shape(p("a")) != task_shape(other_keys)
    jobs = fewshot_jobs([p("a"), other_words, other_keys], ex)
    assert [j[0].prompt_id for j in jobs] == ["b"]


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]}}}


def tool_prompt(pid, text, tools=(WEATHER,)):
    return Prompt(pid, [{"role": "user", "content": text}], contract={"tools": list(tools)})


def test_tool_requests_share_exemplars_by_their_functions_and_are_shown_a_call():
    a, b = tool_prompt("a", "Weather in Lima?"), tool_prompt("b", "Is it cold in Oslo today?")
    c = tool_prompt("c", "Book a table", tools=[{"type": "function", "function": {"name": "book"}}])
    call = Candidate("", "plain", tool_calls=[{"name": "get_weather", "arguments": '{"city": "Lima"}'}])
    ex = pick_exemplars([a, b, c], {"a": (call, 1.0)}, min_score=0.9)
    assert list(ex) == [("tools", "get_weather")]
    jobs = fewshot_jobs([a, b, c], ex)
    assert [j[0].prompt_id for j in jobs] == ["b"]
    demo = jobs[0][2][1]
    assert demo["role"] == "assistant" and demo["content"] == ""
    assert demo["tool_calls"] == [{"id": "call_0", "type": "function",
                                   "function": {"name": "get_weather", "arguments": '{"city": "Lima"}'}}]
    assert answer_turn("plain words") == {"role": "assistant", "content": "plain words"}


BOOK = {"type": "function", "function": {"name": "book_room", "description": "Book a hotel room.", "parameters": {
    "type": "object", "properties": {"guest": {"type": "string"}, "nights": {"type": "integer"}},
    "required": ["guest", "nights"]}}}


def test_a_tool_requests_scaffold_asks_each_functions_arguments_as_a_typed_skeleton():
    p = tool_prompt("a", "Book 3 nights for Ann Lee.", tools=(WEATHER, BOOK))
    jobs = round_one_jobs([p], ["plain", "scaffold"])
    assert [(j.strategy, j.as_call) for j in jobs] == [("plain", None), ("scaffold", "get_weather"),
                                                        ("scaffold", "book_room")]
    book = jobs[2]
    assert "book_room (Book a hotel room.)" in book.messages[0]["content"]
    assert book.messages[-1]["content"].endswith('Reply with only this JSON object filled in: {"guest": "...", '
                                                 '"nights": "..."}')
    # A forced function: the key scaffold, sent with the contract, so vLLM makes it a call;
    # "none" forbids calls: the plain scaffold.
    forced = tool_prompt("b", "Book 3 nights for Ann Lee.", tools=(WEATHER, BOOK))
    forced.contract["tool_choice"] = {"type": "function", "function": {"name": "book_room"}}
    [job] = round_one_jobs([forced], ["scaffold"])
    assert job.as_call is None and "exactly the keys guest, nights" in job.messages[0]["content"]
    forced.contract["tool_choice"] = "none"
    assert [j.as_call for j in round_one_jobs([forced], ["scaffold"])] == [None]


def test_a_skeletons_answer_becomes_a_call_of_its_function():
    got = as_call_candidate("book_room", 'Sure: {"guest": "Ann Lee", "nights": 3}', "scaffold")
    assert got.text == "" and got.tool_calls == [{"name": "book_room", "arguments": '{"guest": "Ann Lee", "nights": 3}'}]
    assert as_call_candidate("book_room", "I cannot book rooms.", "scaffold") == Candidate("I cannot book rooms.",
                                                                                          "scaffold")


def test_round_one_strategies_are_checked():
    jobs = round_one_jobs([p("a"), p("b")], ["plain", "scaffold", "fewshot"])
    assert [(j[0].prompt_id, j[1]) for j in jobs] == [("a", "plain"), ("a", "scaffold"), ("b", "plain"),
                                                      ("b", "scaffold")]
    with pytest.raises(ValueError, match="unknown exploration strategies"):
        round_one_jobs([p("a")], ["telepathy"])


def test_request_seeds_are_stable_and_differ_by_request():
    msgs = p("a").messages
    assert request_seed(0, "plain", msgs) == request_seed(0, "plain", [dict(m) for m in msgs])
    seeds = {request_seed(0, "plain", msgs), request_seed(1, "plain", msgs), request_seed(0, "scaffold", msgs),
             request_seed(0, "plain", p("b", "What is 2+2?").messages)}
    assert len(seeds) == 4 and all(0 <= s < 2**31 for s in seeds)


def test_explore_timeouts_follow_the_measured_speed(monkeypatch):
    from trainer import explore

    now = [100.0]
    monkeypatch.setattr(explore.time, "monotonic", lambda: now[0])
    pace = explore.Pace(concurrency=8, first_s=1800, floor_s=60, slack=3)
    assert pace.timeout_s(1280) == 1800  # nothing measured yet
    pace.start()
    now[0] += 100
    pace.answered(2400)                   # 24 tok/s in all: the AVX2 machine
    slow = pace.timeout_s(4 * 320)        # a stepwise request: n=4, 320 tokens, 8 sharing the engine
    assert slow == pytest.approx(3 * 1280 * 8 / 24)
    assert slow > 300                     # the old fixed timeout would have cut it off
    pace.answered(30000 - 2400)           # 300 tok/s: a fast machine
    assert pace.timeout_s(1280) == pytest.approx(3 * 1280 * 8 / 300)
    assert pace.timeout_s(8) == 60        # never under the floor


def test_scaffolds_decode_under_the_keys_or_the_functions_own_schema():
    [plain, keyed] = round_one_jobs([p("a")], ["plain", "scaffold"])
    assert "response_format" not in plain.params and not plain.guided
    schema = keyed.params["response_format"]["json_schema"]["schema"]
    assert keyed.guided and schema["required"] == ["name", "city"] and schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"name", "city"}
    # Off: the scaffold as before.
    [unguided] = round_one_jobs([p("a")], ["scaffold"], guided=False)
    assert "response_format" not in unguided.params and not unguided.guided
    # A function's arguments: its own parameters schema, closed to invented keys...
    t = tool_prompt("b", "Book 3 nights for Ann Lee.", tools=(WEATHER, BOOK))
    book = next(j for j in round_one_jobs([t], ["scaffold"]) if j.as_call == "book_room")
    got = book.params["response_format"]["json_schema"]
    assert got["name"] == "book_room" and got["schema"]["properties"] == BOOK["function"]["parameters"]["properties"]
    assert got["schema"]["additionalProperties"] is False
    # ...unless it allows them; no guide for a function without properties.
    open_fn = {"type": "function", "function": {"name": "note", "parameters": {
        "type": "object", "properties": {"text": {"type": "string"}}, "additionalProperties": True}}}
    bare_fn = {"type": "function", "function": {"name": "ping", "parameters": {"type": "object"}}}
    jobs = {j.as_call: j for j in round_one_jobs([tool_prompt("c", "Note: hi.", tools=(open_fn, bare_fn))],
                                                  ["scaffold"])}
    assert jobs["note"].params["response_format"]["json_schema"]["schema"]["additionalProperties"] is True
    assert "response_format" not in jobs["ping"].params and not jobs["ping"].guided
    # The client's own json_schema is sent as it is, never replaced by ours.
    own = Prompt("d", [{"role": "user", "content": EXTRACT}], contract={"response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}})
    [j] = round_one_jobs([own], ["scaffold"])
    assert "response_format" not in j.params and not j.guided


def test_a_heavy_deep_or_referencing_parameters_schema_is_explored_unguided():
    """A tenant's own schema reaches vLLM's grammar compiler in every cycle: past the bounds
    its skeleton is explored as before guiding, and a normal function beside it stays guided."""
    from trainer.explore import MAX_GUIDE_CHARS, MAX_GUIDE_DEPTH

    def fn(name, params):
        return {"type": "function", "function": {"name": name, "parameters": params}}

    big = fn("big", {"type": "object", "properties": {f"k{i}": {"type": "string", "description": "x" * 40}
                                                     for i in range(MAX_GUIDE_CHARS // 40)}})
    nested = {"type": "string"}
    for _ in range(MAX_GUIDE_DEPTH):
        nested = {"type": "object", "properties": {"a": nested}}
    deep = fn("deep", {"type": "object", "properties": {"a": nested}})
    ref = fn("ref", {"type": "object", "properties": {"node": {"$ref": "#/$defs/node"}},
                     "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}}})
    jobs = {j.as_call: j for j in round_one_jobs([tool_prompt("h", "Book 3 nights for Ann Lee.",
                                                              tools=(big, deep, ref, BOOK))], ["scaffold"])}
    assert not jobs["big"].guided and not jobs["deep"].guided and not jobs["ref"].guided
    assert jobs["book_room"].guided


def test_a_schema_refused_is_explored_unguided_with_a_fake_openai_server(monkeypatch):
    """A fake OpenAI server (httpx MockTransport: no vLLM needed to refuse a schema) answers
    400 to any request with a response_format, as vLLM does for a schema its grammar cannot take."""
    import httpx

    from trainer import explore

    sent = []

    def handler(request):
        body = json.loads(request.content)
        sent.append(body)
        if "response_format" in body:
            return httpx.Response(400, json={"error": {"message": "unsupported JSON schema"}})
        return httpx.Response(200, json={"choices": [{"message": {"content": '{"guest": "Ann Lee", "nights": 3}'}}],
                                         "usage": {"completion_tokens": 9}})

    real = httpx.Client
    transport = httpx.MockTransport(handler)
    t = tool_prompt("b", "Book 3 nights for Ann Lee.", tools=(BOOK,))
    jobs = round_one_jobs([t], ["scaffold"])
    assert jobs[0].guided
    monkeypatch.setattr(explore.httpx, "Client", lambda **kw: real(transport=transport, **kw))
    got = explore.run_jobs(jobs, "http://vllm", "m", n=1, max_tokens=32, concurrency=1)
    assert [("response_format" in b) for b in sent] == [True, False]
    assert got["b"][0].tool_calls == [{"name": "book_room", "arguments": '{"guest": "Ann Lee", "nights": 3}'}]
