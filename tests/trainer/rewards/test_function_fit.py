"""The function-fit source (trainer/rewards/function_fit.py): calls of the function the live
model clearly prefers score 1, of another 0; no opinion where it is unsure or no call is made."""
import json

from hypothesis import given
from hypothesis import strategies as st

from trainer.prompts import Candidate, Prompt
from trainer.rewards.function_fit import FunctionFit, favourite


def call(name, **args):
    return Candidate("", "scaffold", tool_calls=[{"name": name, "arguments": json.dumps(args)}])


PROMPT = Prompt("p1", [{"role": "user", "content": "Book 3 nights in Oslo for Ana."}])
BELIEFS = {"p1": {"book_room": -0.4, "send_invoice": -3.1, "log_workout": -5.0}}


def test_calls_of_the_favourite_score_one_and_others_zero():
    fit = FunctionFit(BELIEFS, margin=1.0)
    scores = fit(PROMPT, [call("book_room", guest="Ana", city="Oslo", nights=3), call("send_invoice", customer="Ana"),
                          call("log_workout")])
    assert scores == [1.0, 0.0, 0.0]


def test_an_answer_in_words_gets_no_opinion():
    # Calling may be optional (tool_choice auto): the source speaks of which function, not whether.
    assert FunctionFit(BELIEFS, margin=1.0)(PROMPT, [Candidate("Booked!", "plain")]) == [None]


def test_a_call_written_as_text_counts_as_a_call():
    text = '<tool_call>\n{"name": "send_invoice", "arguments": {"customer": "Ana"}}\n</tool_call>'
    assert FunctionFit(BELIEFS, margin=1.0)(PROMPT, [Candidate(text, "plain"), call("book_room")]) == [0.0, 1.0]


def test_no_opinion_when_no_answer_calls_the_favourite():
    # Zeros for every call would tell them apart by nothing (and rank them below answers in words).
    assert FunctionFit(BELIEFS, margin=1.0)(PROMPT, [call("send_invoice"), call("log_workout")]) == [None, None]


def test_several_calls_score_the_share_that_names_the_favourite():
    both = Candidate("", "plain", tool_calls=[{"name": "book_room", "arguments": "{}"},
                                              {"name": "send_invoice", "arguments": "{}"}])
    assert FunctionFit(BELIEFS, margin=1.0)(PROMPT, [both]) == [0.5]


def test_an_unsure_model_masks_the_prompt():
    # The favourite leads by 2.7 nats: a margin of 3 asks more than that.
    assert FunctionFit(BELIEFS, margin=3.0)(PROMPT, [call("book_room"), call("send_invoice")]) == [None, None]


def test_prompts_without_beliefs_get_no_opinion():
    other = Prompt("p2", [{"role": "user", "content": "hi"}])
    assert FunctionFit(BELIEFS, margin=0.0)(other, [call("book_room")]) == [None]


def test_one_function_is_no_choice():
    assert favourite({"book_room": -0.1}, margin=0.0) is None
    assert favourite({}, margin=0.0) is None


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.floats(-50, 0), min_size=2, max_size=6),
       st.floats(0, 10))
def test_the_favourite_is_the_most_likely_name_and_leads_by_the_margin(logprobs, margin):
    best = favourite(logprobs, margin)
    ranked = sorted(logprobs.values(), reverse=True)
    if best is None:
        assert ranked[0] - ranked[1] < margin
    else:
        assert logprobs[best] == ranked[0] and ranked[0] - ranked[1] >= margin
