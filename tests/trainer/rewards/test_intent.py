"""Which JSON keys a request wants, in words no other test or benchmark prompt uses
(trainer/rewards/intent.py). Each wording: (text, the keys it asks for)."""
import pytest

from trainer.prompts import Prompt
from trainer.rewards.intent import json_keys_in_text, requested_keys

NOTE = "Hi, this is Priya Raman, I'll land in Oslo on 14 May at 09:40 on flight SK 4410."

WORDINGS = [
    # keys named after a keyword
    (f"Return a JSON object with the keys traveller, city, date for this message: {NOTE}", ["traveller", "city", "date"]),
    (f"Reply as JSON using the fields traveller and flight. {NOTE}", ["traveller", "flight"]),
    (f"Give me JSON with keys `traveller`, `arrival_time` and `flight` for: {NOTE}",
     ["traveller", "arrival_time", "flight"]),
    (f"JSON only. Keys: traveller, city, flight\n{NOTE}", ["traveller", "city", "flight"]),
    (f"Produce json whose properties are named traveller; city; date. Text: {NOTE}", ["traveller", "city", "date"]),
    (f"Output a JSON record with fields called 'traveller' and 'city' about this: {NOTE}", ["traveller", "city"]),
    (f"{NOTE}\n\nFormat: JSON. Attributes: traveller / city / flight.", ["traveller", "city", "flight"]),
    (f"I need JSON. Columns: traveller, date, arrival time\n{NOTE}", ["traveller", "date", "arrival_time"]),
    (f"Please make a json with the following keys: traveller, destination city.\n{NOTE}",
     ["traveller", "destination_city"]),
    # the object named by what it contains
    (f"A JSON object containing traveller and city, based on: {NOTE}", ["traveller", "city"]),
    (f"Send back JSON that has traveller, flight and date in it. {NOTE}", ["traveller", "flight", "date"]),
    (f"json dict having the traveller, the city and the date, from this note: {NOTE}", ["traveller", "city", "date"]),
    (f"Respond with JSON including traveller & flight. {NOTE}", ["traveller", "flight"]),
    # what to pull out, then where from, then JSON
    (f"Put the traveller, city and date of this note into JSON. {NOTE}", ["traveller", "city", "date"]),
    (f"Pull out the traveller and the flight from this text as JSON: {NOTE}", ["traveller", "flight"]),
    (f"Grab the city and date from the message below, JSON please.\n{NOTE}", ["city", "date"]),
    (f"Identify the traveller, flight of this email and answer in JSON.\n{NOTE}", ["traveller", "flight"]),
    (f"Capture its traveller and city from my note in json form: {NOTE}", ["traveller", "city"]),
    (f"extract the fields traveller and city out of it: {NOTE}", ["traveller", "city"]),
    # a bulleted list under the keyword
    (f"Turn this into JSON with these fields:\n- traveller\n- city\n- flight\n\n{NOTE}", ["traveller", "city", "flight"]),
    (f"JSON output. Required keys:\n1. traveller\n2. arrival time\n3. date\n{NOTE}", ["traveller", "arrival_time", "date"]),
    (f"Fields to fill (as JSON):\n* traveller: full name\n* city — where they land\n{NOTE}", ["traveller", "city"]),
    # a skeleton object, with or without values
    ('Fill in {"traveller": "", "city": "", "date": ""} from: ' + NOTE, ["traveller", "city", "date"]),
    ('Answer with {"traveller": "...", "flight": "..."} and nothing else. ' + NOTE, ["traveller", "flight"]),
    ("Return {traveller, city, date} as JSON for: " + NOTE, ["traveller", "city", "date"]),
    ('Use this template: {"traveller": null, "arrival": null}\n' + NOTE, ["traveller", "arrival"]),
    ("Shape: {traveller: ..., flight: ...}\n" + NOTE, ["traveller", "flight"]),
    # a schema in the text
    ('Conform to this JSON schema: {"type": "object", "properties": {"traveller": {"type": "string"}, '
     '"city": {"type": "string"}}, "required": ["traveller"]}\n' + NOTE, ["traveller", "city"]),
    ('Schema: {"$schema": "https://json-schema.org/draft/2020-12/schema", "properties": {"flight": {}, "date": {}}}. '
     + NOTE, ["flight", "date"]),
    # other languages of the same habit
    (f"Please return JSON with the keys traveller, city. Merci! {NOTE}", ["traveller", "city"]),
    (f"As json, with properties: traveller, city, flight ({NOTE})", ["traveller", "city", "flight"]),
    (f"Could you list the traveller and date from this message in JSON? {NOTE}", ["traveller", "date"]),
]

NOT_JSON = [
    f"Summarise this message in one sentence: {NOTE}",
    "What are the keys to a good night's sleep?",
    f"Which fields of study does this mention? {NOTE}",
    "Put the kettle on and tell me a joke.",
    "Explain what a JSON schema is.",
    "Extract the main idea from this paragraph: the sea is calm.",
]


@pytest.mark.parametrize("text,keys", WORDINGS, ids=[f"w{i}" for i in range(len(WORDINGS))])
def test_keys_are_found_in_any_wording(text, keys):
    assert json_keys_in_text(text) == keys


def test_there_are_at_least_thirty_wordings():
    assert len(WORDINGS) >= 30 and len({t for t, _ in WORDINGS}) == len(WORDINGS)


@pytest.mark.parametrize("text", NOT_JSON)
def test_no_keys_where_no_json_is_asked(text):
    assert json_keys_in_text(text) is None


def test_the_contract_comes_before_the_words():
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "when": {"type": "string"}}}
    p = Prompt("p", [{"role": "user", "content": "Return JSON with the keys alpha, beta."}],
               contract={"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    assert requested_keys(p) == ["name", "when"]
    tool = {"type": "function", "function": {"name": "book", "parameters": {"type": "object", "properties": {
        "seat": {}, "meal": {}}}}}
    forced = Prompt("p", p.messages, contract={"tools": [tool], "tool_choice": {"type": "function",
                                                                                 "function": {"name": "book"}}})
    assert requested_keys(forced) == ["seat", "meal"]
    optional = Prompt("p", p.messages, contract={"tools": [tool]})  # the model may not call it: the words decide
    assert requested_keys(optional) == ["alpha", "beta"]
