"""The one rule for "this value was copied from the conversation" (trainer/rewards/grounding.py),
and that its three readers follow it."""
from hypothesis import given
from hypothesis import strategies as st

from trainer.pairs import grounded
from trainer.prompts import Candidate, Prompt
from trainer.rewards.contract import tool_call_verifier
from trainer.rewards.grounding import copied, normalize
from trainer.rewards.json_extraction import score_extraction

TEXT = "Order 100 from Bo Smith, shipped to New  York on 2026-03-01 for $45.00 (code A-17)."


def test_text_is_found_as_whole_words_only():
    assert copied("Bo Smith", TEXT)
    assert copied("new york", TEXT)           # case and spacing ignored
    assert copied("A-17", TEXT)
    assert copied("2026-03-01", TEXT)
    assert not copied("Smi", TEXT)            # a fragment of a word
    assert not copied("ork", TEXT)
    assert not copied("bo", "I bought it")    # the bug the substring test had


def test_numbers_are_found_by_value():
    assert copied(45, TEXT) and copied("45", TEXT) and copied("$45.00", TEXT) and copied(45.0, TEXT)
    assert copied(100, TEXT)
    assert not copied(10, TEXT) and not copied("10", TEXT)   # "10" is not in "100"
    assert not copied(0, TEXT)


def test_values_with_nothing_to_copy_are_never_found():
    for v in ("", "   ", None, True, False):
        assert not copied(v, TEXT)


def test_values_that_start_or_end_with_punctuation_are_found_inside_text():
    assert copied("(555) 010", "call (555) 010-2233 today")
    assert copied("#42", "ticket #42 is open")


@given(st.text(min_size=1, max_size=30), st.text(max_size=30), st.text(max_size=30))
def test_a_value_between_spaces_is_always_found(value, before, after):
    if not normalize(value) or any(c.isdigit() for c in value):
        return  # numbers are read by value, not as text
    assert copied(value, f"{before} {value} {after}")


def test_the_pairs_check_follows_the_rule():
    assert grounded(True, TEXT) and grounded("Bo Smith", TEXT)
    assert not grounded("bo", "i bought it")


def test_the_extraction_verifier_follows_the_rule():
    src = "Extract the fields name and city from this text: I bought it in Boston."
    fragment = score_extraction('{"name": "bo", "city": "Boston"}', ["name", "city"], src)
    whole = score_extraction('{"name": "I", "city": "Boston"}', ["name", "city"], src)
    assert fragment < whole


def test_the_tool_call_verifier_follows_the_rule():
    tools = [{"type": "function", "function": {"name": "find", "parameters": {
        "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}]
    p = Prompt("t", [{"role": "user", "content": "Look up the customer who bought a lamp."}],
               contract={"tools": tools})

    def score(arg):
        call = {"name": "find", "arguments": f'{{"name": "{arg}"}}'}
        return tool_call_verifier(p, [Candidate("", "s", tool_calls=[call])])[0]

    assert score("bo") < score("lamp")


def test_a_value_that_only_names_a_field_is_the_question_echoed():
    from trainer.rewards.grounding import echoes_a_name

    names = ["event", "venue", "first_name"]
    assert all(echoes_a_name(v, names) for v in ("event", "The venue", "Venue.", "first name", "first-name"))
    assert not any(echoes_a_name(v, names) for v in ("book fair", "Riverside Park", "events hall", "", 3, None))
    # Seen chosen three times in a bench-lift cycle: every value found in the request, none an answer.
    src = ("Put the event, venue and attendees of this note into JSON.\n"
           "Reminder: 80 people signed up for the book fair at Riverside Park.")
    echoed = score_extraction('{"event": "event", "venue": "venue", "attendees": "attendees"}',
                              ["event", "venue", "attendees"], src)
    right = score_extraction('{"event": "book fair", "venue": "Riverside Park", "attendees": 80}',
                             ["event", "venue", "attendees"], src)
    assert right == 1.0 and echoed == 0.5  # the object and its keys, no value found


def test_two_fields_with_one_text_or_one_inside_another_overlap():
    from trainer.rewards.grounding import overlaps, overlapping

    assert overlaps(["Austin for 3 people", "Austin for 3 people", 3]) == {0, 1}
    assert overlaps(["Central Station to Melbourne", "Melbourne.", 6]) == {0, 1}
    assert overlapping(["Diego Alvarez", "Monday", "Alvarez"])
    assert overlapping(["June 25", "june  25"])        # case and spacing aside
    # Numbers never: equal ones coincide, and a number inside a date or a name is its own.
    assert not overlapping(["Sofia Rossi", "Grand Plaza", 2, "2", 2.0, "$2"])
    assert not overlapping(["June 2", 2, "10:30", 30, "Terminal 2"])
    # Whole tokens only: a word inside an email address or a longer word is not the value.
    assert not overlapping(["Bo", "Bob Smith"]) and not overlapping(["Acme", "bob@acme.com", "Anna", "anna@x.io"])
    assert not overlapping(["Central Station", "Melbourne", 6, None, True, ""])
