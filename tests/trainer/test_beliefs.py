"""What the live model believes about a request offering tools (trainer/beliefs.py), with the
real base model: where a call's name begins in its own rendering, and which function it
would name there."""
import pytest

from tests.models import require_base_model
from trainer.beliefs import _PLACEHOLDER, call_text, choosing, function_beliefs, name_tokens
from trainer.prompts import Prompt
from trainer.rewards.function_fit import favourite


def tool(name, description, **params):
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": {k: {"type": t} for k, t in params.items()},
                       "required": list(params)}}}


TOOLS = [tool("book_room", "Book a hotel room.", guest="string", city="string", nights="integer"),
         tool("send_invoice", "Send an invoice to a customer.", customer="string", amount="number"),
         tool("log_workout", "Record a workout.", activity="string", minutes="integer")]
# One request per function, worded for this test only. The 135M model is right for about 7
# requests in 10 (tests/bench/results/function_fit.md) and leans to the last function listed:
# "Reserve a hotel room in Lisbon for Ines Costa, 4 nights." gets log_workout. These are asks
# it gets right, so a wrong head, tail or bookkeeping is what fails here.
ASKS = {"book_room": "Book a room: Ines Costa, Lisbon, 4 nights.",
        "send_invoice": "Send an invoice of 250 dollars to the customer Omar Haddad.",
        "log_workout": "Record my workout: 45 minutes of swimming."}


def prompt(pid, text, **contract):
    return Prompt(pid, [{"role": "user", "content": text}], contract={"tools": TOOLS, **contract})


def test_only_a_choice_of_functions_is_a_choice():
    assert choosing(prompt("a", "x"))
    assert choosing(prompt("a", "x", tool_choice="required"))
    assert not choosing(prompt("a", "x", tool_choice="none"))
    assert not choosing(prompt("a", "x", tool_choice={"type": "function", "function": {"name": "book_room"}}))
    assert not choosing(Prompt("a", [{"role": "user", "content": "x"}], contract={"tools": TOOLS[:1]}))
    assert not choosing(Prompt("a", [{"role": "user", "content": "x"}]))


@pytest.fixture(scope="module")
def engine():
    from trainer.generate import Engine

    return Engine(require_base_model(), dtype="float32", log=lambda _: None)


def test_the_call_is_scored_after_what_the_served_model_is_shown(engine):
    from schemas.chat_template import TOOLS_TEMPLATE

    template = TOOLS_TEMPLATE.read_text()
    shown, call = call_text(engine, prompt("a", ASKS["book_room"]), template)
    # What vLLM shows the model: the request with the tools template and the generation prompt.
    assert shown == engine.render(prompt("a", ASKS["book_room"]).messages, tools=TOOLS, chat_template=template,
                                  add_generation_prompt=True)
    assert call.startswith('<tool_call>\n{"name": "' + _PLACEHOLDER + '"')
    # The name's tokens as the model writes them, tokenized whole, through the one closing it.
    ids = name_tokens(engine, call, "book_room")
    text = engine.tokenizer.decode(ids)
    assert text.startswith('<tool_call>\n{"name": "book_room"') and len(text) <= len('<tool_call>\n{"name": "book_room", ')
    whole = engine.tokenizer(call.replace(_PLACEHOLDER, "book_room"), add_special_tokens=False)["input_ids"]
    assert whole[: len(ids)] == ids
    # A name that is the start of another is scored with what closes it, so the two differ.
    short, long = name_tokens(engine, call, "book"), name_tokens(engine, call, "book_room")
    assert long[: len(short)] != short


def test_tails_on_the_cached_request_score_as_whole_sequences_do(engine):
    # tail_logprobs reuses the request's KV cache across tails (cropped back after each); the
    # batched path scores each sequence from scratch: both must agree, in either order.
    head = engine.render([{"role": "user", "content": "Name a color."}], add_generation_prompt=True)
    tails = ["Blue is a color.", "Red", "The sky is blue because of scattering."]
    ids = [engine.tokenizer(t, add_special_tokens=False)["input_ids"] for t in tails]
    cached = engine.tail_logprobs(head, ids)
    again = engine.tail_logprobs(head, ids[::-1])[::-1]
    whole = [lp for lp, _ in engine.continuation_logprobs([head] * 3, tails)]
    assert cached == pytest.approx(whole, abs=2e-3) and again == pytest.approx(whole, abs=2e-3)
    assert len(set(round(x, 2) for x in cached)) == 3  # three different answers, three different scores


def test_the_model_names_the_function_each_request_asks_for(engine):
    prompts = [prompt(name, text) for name, text in ASKS.items()]
    beliefs = function_beliefs(prompts + [prompt("none", "hi", tool_choice="none")], engine)
    assert set(beliefs) == set(ASKS)  # the request that allows no call is not asked about
    for name in ASKS:
        assert set(beliefs[name]) == {"book_room", "send_invoice", "log_workout"}
        assert all(v < 0 for v in beliefs[name].values())
    picked = {name: favourite(beliefs[name], margin=0.0) for name in ASKS}
    assert picked == {name: name for name in ASKS}, beliefs


def test_the_content_free_request_keeps_everything_but_the_users_words():
    from trainer.beliefs import content_free

    p = Prompt("a", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Bill Omar 250."}],
               contract={"tools": TOOLS, "tool_choice": "auto"})
    blank = content_free(p)
    assert blank.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": ""}]
    assert blank.contract == p.contract and blank.prompt_id == "a"
    assert p.messages[1]["content"] == "Bill Omar 250."  # the request itself is untouched
