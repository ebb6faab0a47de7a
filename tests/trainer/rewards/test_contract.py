"""The contract verifiers (trainer/rewards/contract.py): answers judged against what the
request's own parameters ask (response_format, tools), whatever its wording."""
import json

import pytest

from trainer.prompts import Candidate, Prompt
from trainer.rewards.contract import (COVERAGE_WEIGHT, calls_grounded, calls_of, coverage, structured_output_verifier,
                                     tool_call_verifier)

ORDER = {
    "type": "object",
    "properties": {"customer": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1},
                   "status": {"enum": ["open", "shipped"]}, "address": {"$ref": "#/$defs/address"}},
    "required": ["customer", "quantity", "status"],
    "$defs": {"address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
}


def schema_prompt(schema=ORDER, text="Maria Lopez ordered 3 lamps; the order is open. Ship to Lima."):
    return Prompt("p", [{"role": "user", "content": text}],
                  contract={"response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": schema}}})


def score(prompt, *texts):
    return structured_output_verifier(prompt, [Candidate(t, "plain") for t in texts])


def test_json_schema_answers_are_judged_by_the_schema_itself():
    good = json.dumps({"customer": "Maria Lopez", "quantity": 3, "status": "open", "address": {"city": "Lima"}})
    assert score(schema_prompt(), good, "```json\n" + good + "\n```") == [1.0, 1.0]
    wrong = [
        {"customer": "Maria Lopez", "quantity": "3", "status": "open"},            # type
        {"customer": "Maria Lopez", "status": "open"},                              # required
        {"customer": "Maria Lopez", "quantity": 3, "status": "closed"},             # enum
        {"customer": "Maria Lopez", "quantity": 3, "status": "open", "address": {}},  # $ref'd required
        ["Maria Lopez", 3],
    ]
    assert score(schema_prompt(), *map(json.dumps, wrong)) == [0.25] * len(wrong)
    assert score(schema_prompt(), "Sure! " + good, "The customer is Maria Lopez.") == [0.0, 0.0]


def test_no_opinion_without_a_schema_or_with_a_broken_one():
    plain = Prompt("p", [{"role": "user", "content": "Return JSON with the customer."}])
    assert score(plain, "{}") == [None]
    assert score(schema_prompt(schema={"type": "no-such-type"}), "{}") == [None]
    text_format = Prompt("p", plain.messages, contract={"response_format": {"type": "text"}})
    assert score(text_format, "{}") == [None]


def test_json_object_means_exactly_one_object():
    p = Prompt("p", [{"role": "user", "content": "Reply in JSON."}], contract={"response_format": {"type": "json_object"}})
    assert score(p, '{"a": 1}', '[{"a": 1}]', '{"a": 1} {"b": 2}', 'Here: {"a": 1}') == [1.0, 0.25, 0.0, 0.0]


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]},
                                     "date": {"type": "string", "format": "date"}},
    "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"], "additionalProperties": True}}}


def tool_prompt(tool_choice=None, text="What's the weather in Lima tomorrow, in Celsius?"):
    contract = {"tools": [WEATHER, TIME]} | ({"tool_choice": tool_choice} if tool_choice else {})
    return Prompt("p", [{"role": "user", "content": text}], contract=contract)


def call(name, **args):
    return Candidate("", "plain", tool_calls=[{"name": name, "arguments": json.dumps(args)}])


def alone(prompt, candidates):
    """Each candidate scored in a group of its own: what validity and grounding give it, before
    coverage ranks it against the rest of its group (test_coverage_...)."""
    return [tool_call_verifier(prompt, [c])[0] for c in candidates]


def test_tool_calls_are_valid_complete_invented_nothing_and_grounded():
    p = tool_prompt()
    got = alone(p, [
        call("get_weather", city="Lima", unit="C", date="2026-12-04"),  # enum and format values need no grounding
        call("get_weather", city="Lima"),
        call("get_weather", city="Paris"),                  # valid, but Paris appears nowhere
        call("get_weather", unit="C"),                      # required city missing
        call("get_weather", city="Lima", country="Peru"),   # invented argument
        call("get_weather", city="Lima", unit="Kelvin"),    # not in the enum
        call("send_email", to="x"),                         # a function never offered
        Candidate("", "plain", tool_calls=[{"name": "get_weather", "arguments": '{"city": "Li'}]),  # broken JSON
        Candidate("It is sunny in Lima.", "plain"),          # words: calling was optional
    ])
    assert got == [1.0, 1.0, 0.5, 0.25, 0.25, 0.25, 0.0, 0.0, None]
    # A schema that allows extra keys allows them.
    allowed = tool_prompt(text="Time in Lima, on a 24h clock?")
    assert tool_call_verifier(allowed, [call("get_time", zone="Lima", fmt="24h")]) == [1.0]
    assert tool_call_verifier(allowed, [call("get_time", zone="Lima", fmt="12h")]) == [0.75]  # extras are grounded too


def test_tool_choice_is_part_of_the_contract():
    forced = tool_prompt({"type": "function", "function": {"name": "get_weather"}})
    assert tool_call_verifier(forced, [call("get_time", zone="Lima"), Candidate("Sunny.", "plain"),
                                       call("get_weather", city="Lima")]) == [0.0, 0.0, 1.0]
    assert tool_call_verifier(tool_prompt("required"), [Candidate("Sunny.", "plain")]) == [0.0]
    assert tool_call_verifier(tool_prompt("none"), [call("get_weather", city="Lima")]) == [None]
    assert tool_call_verifier(Prompt("p", [{"role": "user", "content": "hi"}]), [call("f")]) == [None]


def test_hermes_calls_written_as_text_are_read():
    c = Candidate('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lima"}}\n</tool_call>', "plain")
    assert calls_of(c) == [{"name": "get_weather", "arguments": '{"city": "Lima"}'}]
    assert tool_call_verifier(tool_prompt(), [c]) == [1.0]
    assert calls_of(Candidate("<tool_call>{not json}</tool_call>", "plain")) == []


@pytest.mark.parametrize("tools", [[{"type": "function"}], [{"function": {"parameters": {}}}], ["x"]])
def test_malformed_tool_definitions_are_no_contract(tools):
    p = Prompt("p", [{"role": "user", "content": "hi"}], contract={"tools": tools})
    assert tool_call_verifier(p, [call("f")]) == [None]


def test_any_of_and_nested_enums_are_the_schemas_own_rules():
    schema = {"type": "object", "properties": {
        "contact": {"anyOf": [{"type": "string", "pattern": "^[^@]+@[^@]+$"}, {"type": "integer", "minimum": 0}]},
        "tags": {"type": "array", "items": {"enum": ["urgent", "later"]}, "maxItems": 2}},
        "required": ["contact"]}
    p = schema_prompt(schema=schema)
    good = [{"contact": "ana@example.org"}, {"contact": 5551234, "tags": ["urgent"]}]
    bad = [{"contact": "not an address"}, {"contact": -1}, {"contact": 1, "tags": ["soon"]},
           {"contact": 1, "tags": ["urgent", "later", "urgent"]}]
    assert score(p, *map(json.dumps, good)) == [1.0, 1.0]
    assert score(p, *map(json.dumps, bad)) == [0.25] * len(bad)


ORDER_TOOL = {"type": "function", "function": {"name": "record_order", "parameters": {
    "type": "object", "properties": {"customer": {"type": "string"}, "quantity": {"type": "integer"},
                                     "total": {"type": "number"}}, "required": ["customer", "quantity", "total"]}}}


def test_a_call_right_but_for_quoted_numbers_ranks_between_invalid_and_valid():
    p = Prompt("p", [{"role": "user", "content": "Log it: Ann Lee bought 24 mugs, total 45.50."}],
               contract={"tools": [ORDER_TOOL], "tool_choice": {"type": "function", "function": {"name": "record_order"}}})
    got = alone(p, [
        call("record_order", customer="Ann Lee", quantity=24, total=45.5),        # typed and grounded
        call("record_order", customer="Ann Lee", quantity="24", total="45.50"),   # quoted numbers
        call("record_order", customer="Eve", quantity="24", total="45.50"),       # quoted, and Eve is invented (1 of 3)
        call("record_order", customer="Ann Lee", quantity="24.5", total=45.5),    # 24.5 is no integer
        call("record_order", customer="Ann Lee", quantity="two dozen", total=45.5),
    ])
    assert got == [1.0, pytest.approx(0.7), pytest.approx(0.7 * (0.5 + 0.5 * 2 / 3)), 0.25, 0.25]


def test_numbers_are_grounded_by_value_and_an_unfilled_skeleton_is_not():
    # Seen when exploring with per-function skeletons: {"customer": "", "amount": 0.0} was
    # valid and scored 1.0, since only non-empty strings were looked for in the conversation.
    p = Prompt("p", [{"role": "user", "content": "Log it: Ann Lee bought 24 mugs, total $45.50."}],
               contract={"tools": [ORDER_TOOL]})
    got = alone(p, [
        call("record_order", customer="Ann Lee", quantity=24, total=45.5),   # 45.5 is $45.50
        call("record_order", customer="Ann Lee", quantity=0, total=0.0),     # the skeleton's zeros
        call("record_order", customer="", quantity=24, total=45.5),          # an empty name
    ])
    assert got == [1.0, pytest.approx(0.5 + 0.5 / 3), pytest.approx(0.5 + 0.5 * 2 / 3)]


TAXI = {"type": "function", "function": {"name": "order_taxi", "description": "Order a taxi.", "parameters": {
    "type": "object", "properties": {"pickup": {"type": "string"}, "destination": {"type": "string"},
                                     "passengers": {"type": "integer"}}, "required": ["pickup", "destination"]}}}
WORKOUT = {"type": "function", "function": {"name": "log_workout", "description": "Log a workout.", "parameters": {
    "type": "object", "properties": {"activity": {"type": "string"}, "minutes": {"type": "integer"}},
    "required": ["activity", "minutes"]}}}
ROOM = {"type": "function", "function": {"name": "book_room", "description": "Book a hotel room.", "parameters": {
    "type": "object", "properties": {"guest": {"type": "string"}, "city": {"type": "string"},
                                     "nights": {"type": "integer"}}, "required": ["guest", "city", "nights"]}}}
INVOICE = {"type": "function", "function": {"name": "send_invoice", "description": "Send an invoice.", "parameters": {
    "type": "object", "properties": {"customer": {"type": "string"}, "amount": {"type": "number"}},
    "required": ["customer", "amount"]}}}


def test_coverage_ranks_the_call_that_accounts_for_more_of_the_request_first():
    """Both calls valid and grounded: grounding alone cannot tell the wrong function from the
    right one (bench-lift cycle 1 chose log_workout for a cab and send_invoice for a hotel room,
    2026-12-07). The call that uses more of the user's words, in its values or its function's
    name and description, keeps its score; a lone call always does."""
    cab = Prompt("p", [{"role": "user", "content": "We are 4: we need a cab from Central Station to Porto."}],
                 contract={"tools": [WORKOUT, TAXI]})
    right = call("order_taxi", pickup="Central Station", destination="Porto", passengers=4)
    wrong = call("log_workout", activity="cab", minutes=4)  # grounded too: "cab" and 4 are in the request
    half = call("order_taxi", pickup="Central Station", destination="Central Station", passengers=4)
    assert alone(cab, [right, wrong, half]) == [1.0, 1.0, 1.0]
    got = tool_call_verifier(cab, [right, wrong, half, Candidate("Sure.", "plain")])
    assert got[0] == 1.0 and got[1] < got[2] < got[0] and got[3] is None
    assert got[1] >= 1 - COVERAGE_WEIGHT  # a ranking, never below what validity gives
    hotel = Prompt("p", [{"role": "user", "content": "Omar Haddad needs a hotel room in Valencia for 2 nights."}],
                   contract={"tools": [INVOICE, ROOM]})
    got = tool_call_verifier(hotel, [call("send_invoice", customer="Omar Haddad", amount=2),
                                     call("book_room", guest="Omar Haddad", city="Valencia", nights=2)])
    assert got[1] == 1.0 and got[0] < 0.95


def test_coverage_reads_words_numbers_and_names_not_stop_words():
    fn = TAXI["function"]
    text = "Get a taxi from the airport to Austin for 3 people."  # content: taxi, airport, austin, 3, people
    assert coverage({"arguments": json.dumps({"pickup": "the airport", "destination": "Austin", "passengers": 3})},
                    fn, text) == pytest.approx(4 / 5)  # taxi (the function's name), airport, austin, 3
    assert coverage({"arguments": json.dumps({"pickup": "x", "destination": "y", "passengers": 3.0})},
                    fn, text) == pytest.approx(2 / 5)  # 3.0 is the 3 of the request
    assert coverage({"arguments": "not json"}, fn, "the a of") == 0.0  # nothing to cover
    # One argument stuffed with the whole request counts no more than VALUE_WORDS of its words.
    stuffed = {"arguments": json.dumps({"activity": "taxi from the airport to Austin for 3 people"})}
    assert coverage(stuffed, WORKOUT["function"], text) == pytest.approx(3 / 5)


def test_a_chosen_call_must_be_grounded():
    cab = Prompt("p", [{"role": "user", "content": "We are 4: we need a cab from Central Station to Porto."}],
                 contract={"tools": [WORKOUT, TAXI]})
    assert calls_grounded(cab, call("order_taxi", pickup="Central Station", destination="Porto", passengers=4))
    assert calls_grounded(cab, call("order_taxi", pickup="Central Station", destination="Porto", passengers="4"))
    assert not calls_grounded(cab, call("log_workout", activity="Cab-to-Porto", minutes=4))  # made up
    assert not calls_grounded(cab, call("order_taxi", pickup="Mazatalla", destination="Porto"))
    assert not calls_grounded(cab, call("send_email", to="x"))  # never offered
    assert calls_grounded(cab, Candidate("A cab is on its way.", "plain"))  # no call: nothing to check
