import json

import pytest

from trainer.prompts import Candidate, Prompt
from trainer.rewards.json_extraction import asked_keys, json_verifier, score_extraction

TEXT = ("Extract the fields customer, item, quantity, total from the text below. Reply with only a JSON object.\n"
        "Text: Maria Lopez ordered 3 lamps for a total of 45.00 dollars.")


def prompt(text=TEXT, feedback=()):
    return Prompt("p1", [{"role": "user", "content": text}], feedback=list(feedback))


def test_asked_keys():
    assert asked_keys(TEXT) == ["customer", "item", "quantity", "total"]
    assert asked_keys("Extract the fields name and city as a JSON object. Text: ...") == ["name", "city"]
    assert asked_keys("What is 2 + 2?") is None


GOOD = '{"customer": "Maria Lopez", "item": "lamps", "quantity": 3, "total": "45.00"}'


@pytest.mark.parametrize("answer,expected", [
    (GOOD, 1.0),
    # Chatter costs 0.4, more than a DPO pair's min_margin (0.3): the bare answer must win a
    # pair against the same answer with chatter (docs/measurements.md: the tuned model kept the chatter).
    ("Sure! " + GOOD, 0.6),
    (GOOD + "\nLet me know if you need anything else!", 0.6),
    ("Here is the JSON:\n```json\n" + GOOD + "\n```", 0.6),
    # A bare ```json fence is acceptable but not as good as the bare object.
    ("```json\n" + GOOD + "\n```", 0.9),
    ("```\n" + GOOD + "\n```", 0.9),
    ('{"customer": "Maria Lopez", "item": "lamps"}', 0.2 + 0.15 + 0.25),
    ('{"customer": "Bob", "item": "cars", "quantity": 9, "total": "1"}', 0.5),  # keys but invented values
    ("The customer is Maria.", 0.0),
    ('{"customer": "Maria Lopez", "item": ', 0.0),
    ('[1, 2]', 0.0),
])
def test_score_extraction(answer, expected):
    assert score_extraction(answer, asked_keys(TEXT), TEXT) == pytest.approx(expected)


def test_chatter_scores_below_fence_below_bare():
    keys = asked_keys(TEXT)
    bare, fenced, chatty = (score_extraction(a, keys, TEXT) for a in (GOOD, f"```json\n{GOOD}\n```", f"{GOOD} Done!"))
    assert bare > fenced > chatty
    assert bare - chatty >= 0.3  # enough spread for a pair at the default min_margin


def test_extra_keys_cost_and_scores_stay_in_range():
    full = '{"customer": "Maria Lopez", "item": "lamps", "quantity": 3, "total": "45.00", "a": 1, "b": 2}'
    assert score_extraction(full, asked_keys(TEXT), TEXT) == pytest.approx(0.9)
    many = "{" + ", ".join(f'"k{i}": {i}' for i in range(40)) + "}"
    assert score_extraction(many, asked_keys(TEXT), TEXT) == 0.0


def test_verifier_has_no_opinion_on_other_prompts():
    assert json_verifier(prompt("What is 2 + 2?"), [Candidate("4", "plain")]) == [None]


def test_copying_the_whole_text_into_every_field_is_not_grounded():
    text = ("Extract the fields event, venue, attendees from the text below. Reply with only a JSON object.\n"
            "Text: Reminder: 352 people signed up for the food market at Harbor Arena.")
    sentence = "Reminder: 352 people signed up for the food market at Harbor Arena."
    gamed = json.dumps({"event": sentence, "venue": sentence, "attendees": sentence})
    honest = json.dumps({"event": "food market", "venue": "Harbor Arena", "attendees": 352})
    same_value = json.dumps({"event": "Harbor Arena", "venue": "Harbor Arena", "attendees": 352})
    keys = ["event", "venue", "attendees"]
    assert score_extraction(honest, keys, text) == pytest.approx(1.0)
    assert score_extraction(gamed, keys, text) == pytest.approx(0.5)        # keys present, nothing grounded
    # One text in two fields: one of them is wrong, which one is not known: neither counts.
    assert score_extraction(same_value, keys, text) == pytest.approx(0.2 + 0.3 + 0.5 * 1 / 3)
    # Nor does a value inside another's ("1" as the date beside "March 1" as the hotel).
    inside = json.dumps({"event": "food market", "venue": "the food market at Harbor Arena", "attendees": 352})
    assert score_extraction(inside, keys, text) == pytest.approx(0.2 + 0.3 + 0.5 * 1 / 3)


def test_a_tool_call_is_left_to_the_tool_call_verifier():
    forced = {"tools": [{"type": "function", "function": {"name": "record", "parameters": {
        "type": "object", "properties": {"customer": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "record"}}}
    p = Prompt("p", [{"role": "user", "content": "Log: Maria Lopez ordered 3 lamps."}], contract=forced)
    cands = [Candidate("", "plain", tool_calls=[{"name": "record", "arguments": '{"customer": "Maria Lopez"}'}]),
             Candidate('<tool_call>\n{"name": "record", "arguments": {"customer": "x"', "plain"),
             Candidate('{"customer": "Maria Lopez"}', "plain")]
    got = json_verifier(p, cands)
    assert got[:2] == [None, None] and got[2] > 0.9
