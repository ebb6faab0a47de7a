"""The `copy` strategy's schemas: values held to what the request itself says."""
import json

from trainer.copying import MAX_SPANS, copied_schema, spans
from trainer.explore import round_one_jobs
from trainer.prompts import Prompt
from trainer.rewards.grounding import copied

TAXI = {"type": "function", "function": {"name": "order_taxi", "description": "Order a taxi.", "parameters": {
    "type": "object", "properties": {"pickup": {"type": "string"}, "destination": {"type": "string"},
                                     "passengers": {"type": "integer"}, "when": {"type": "string", "format": "date-time"},
                                     "class": {"type": "string", "enum": ["standard", "xl"]}},
    "required": ["pickup", "destination"]}}}


def test_spans_are_runs_of_words_that_do_not_cross_punctuation_and_are_found_as_written():
    text = "We are 4: we need a cab from Central Station to Porto.\nBill Ana Lee $45.50, today."
    got = spans(text)
    assert "Central Station" in got and "Porto" in got and "4" in got and "Ana Lee" in got and "45.50" in got
    assert "4 we" not in got and "Porto Bill" not in got and "45.50 today" not in got
    assert "a cab from Central" in got and "a cab from Central Station" not in got  # at most 4 words
    assert len(got) == len(set(got))
    assert all(copied(s, text) for s in got)  # the verifiers find every one


def test_a_long_document_offers_no_spans():
    assert spans(" ".join(f"w{i}" for i in range(MAX_SPANS))) is None
    assert spans("  ...  ") is None


def test_free_values_become_spans_or_numbers_and_fixed_ones_stay():
    schema = TAXI["function"]["parameters"]
    got = copied_schema(schema, ["Porto", "Central Station"], [4.0, 2.5])
    props = got["properties"]
    assert props["pickup"]["enum"] == ["Porto", "Central Station"] and props["passengers"]["enum"] == [4]
    assert props["when"] == schema["properties"]["when"] and props["class"] == schema["properties"]["class"]
    assert got["required"] == ["pickup", "destination"]
    # No integer in the request: the integer stays free rather than impossible.
    assert "enum" not in copied_schema({"type": "integer"}, ["x"], [2.5])
    # A key asked for in words takes any scalar: a span or a number.
    assert copied_schema({"type": ["string", "number", "integer", "boolean"]}, ["Ann"], [53.0]) == {"enum": ["Ann", 53]}
    nested = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}}}}
    assert copied_schema(nested, ["mugs"], [])["properties"]["items"]["items"]["enum"] == ["mugs"]


def test_copy_jobs_for_tools_keys_and_schemas_only():
    tool = Prompt("t", [{"role": "user", "content": "We are 4: we need a cab from Central Station to Porto."}],
                  contract={"tools": [TAXI]})
    [job] = round_one_jobs([tool], ["copy"])
    assert job.strategy == "copy" and job.as_call == "order_taxi" and job.guided
    schema = job.params["response_format"]["json_schema"]["schema"]
    assert "Central Station" in schema["properties"]["pickup"]["enum"] and schema["additionalProperties"] is False
    keyed = Prompt("k", [{"role": "user", "content": "Return a JSON object with the keys name, city for: "
                                                      "Meet Kwame Mensah from Lisbon."}])
    [job] = round_one_jobs([keyed], ["copy"])
    props = job.params["response_format"]["json_schema"]["schema"]["properties"]
    assert set(props) == {"name", "city"} and "Kwame Mensah" in props["name"]["enum"]
    # The request names its keys in words: those names are no value to copy.
    assert not {"name", "city"} & set(props["name"]["enum"]) and "the keys" in props["name"]["enum"]
    own = Prompt("s", [{"role": "user", "content": "Who is in: Meet Kwame Mensah from Lisbon."}], contract={
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "properties": {"person": {"type": "string"}}, "required": ["person"]}}}})
    [job] = round_one_jobs([own], ["copy"])
    assert "Lisbon" in job.params["response_format"]["json_schema"]["schema"]["properties"]["person"]["enum"]
    plain = Prompt("p", [{"role": "user", "content": "What is the capital of France?"}])
    refused = Prompt("n", tool.messages, contract={"tools": [TAXI], "tool_choice": "none"})
    assert round_one_jobs([plain, refused], ["copy"]) == []
    # A forced function: its arguments only, made a call of it.
    other = {"type": "function", "function": {"name": "ping", "parameters": {
        "type": "object", "properties": {"host": {"type": "string"}}}}}
    forced = Prompt("f", tool.messages, contract={"tools": [other, TAXI], "tool_choice": {
        "type": "function", "function": {"name": "order_taxi"}}})
    [job] = round_one_jobs([forced], ["copy"])
    assert job.as_call == "order_taxi" and "Porto" in job.params["response_format"]["json_schema"]["schema"][
        "properties"]["destination"]["enum"]
    json.dumps([j.params for j in round_one_jobs([tool, keyed, own], ["copy"])])  # what vLLM is sent is JSON
