"""What the live model believes about a request: for each request offering a choice of tools,
the log-probability that it writes each function's name where its call begins
(trainer/rewards/function_fit.py says why and how they score).

The request is rendered as vLLM shows it to the served model (its own chat template, or tao's
tools template for a model whose own shows no tools: schemas/chat_template.py), with the
generation prompt. The answer that calls a function is the template's own rendering of an
assistant turn calling it, cut where the name ends: its tokens are scored as the model would
write them, tokenized whole (the closing quote joins the next comma in one token, as it does
when the model writes it), up to and including the token that closes the name, so a name that
is the start of another does not win by being short. The request runs once per prompt; each
name adds a pass over its few tokens (Engine.tail_logprobs), on transformers in the cycle's
process.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Callable

from schemas.chat_template import TOOLS_TEMPLATE, needs_tools_template
from trainer.prompts import Prompt, answer_turn, choosable_functions, offered_functions
from trainer.rewards.function_fit import Beliefs

if TYPE_CHECKING:
    from trainer.generate import Engine

_PLACEHOLDER = "tao_placeholder_function_7c1e"


def choosing(prompt: Prompt) -> bool:
    """Does the request leave the model a choice of functions? (several it may call)"""
    return len({f["name"] for f in choosable_functions(prompt)}) >= 2


def call_text(engine: "Engine", prompt: Prompt, template: str | None) -> tuple[str, str] | None:
    """(the request as the served model is shown it, with the generation prompt; the text the
    template writes after that for an answer calling the placeholder function), or None where
    the template renders no call or renders the request differently once answered."""
    tools = prompt.contract.get("tools")
    shown = engine.render(prompt.messages, tools=tools, chat_template=template, add_generation_prompt=True)
    turn = answer_turn("", [{"name": _PLACEHOLDER, "arguments": "{}"}])
    full = engine.render(prompt.messages + [turn], tools=tools, chat_template=template)
    if not full.startswith(shown) or _PLACEHOLDER not in full[len(shown):]:
        return None
    return shown, full[len(shown):]


def name_tokens(engine: "Engine", call: str, name: str) -> list[int]:
    """The tokens of `call` with `name` in the placeholder's place, up to and including the
    one that closes the name (the first token starting at or after its end)."""
    at = call.index(_PLACEHOLDER)
    written = json.dumps(name, ensure_ascii=False)[1:-1]  # as tao's template (tojson) writes a name
    text = call[:at] + written + call[at + len(_PLACEHOLDER):]
    end = at + len(written)
    enc = engine.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, closed = [], False
    for token, (start, stop) in zip(enc["input_ids"], enc["offset_mapping"]):
        if closed:
            break
        ids.append(token)
        closed = stop > end  # this token reaches past the name: it closes it
    return ids


def content_free(prompt: Prompt) -> Prompt:
    """The request with its user turns' words taken away (tools, system turn and roles kept):
    what the model would name with nothing to go on. Its log-probs are each name's prior (the
    model favours a function for its place in the list or its name alone: "Calibrate before
    use", Zhao et al. 2021); subtracting them leaves what the request's words add."""
    messages = [{**m, "content": ""} if m.get("role") == "user" else m for m in prompt.messages]
    return Prompt(prompt.prompt_id, messages, contract=prompt.contract)


def function_beliefs(prompts: list[Prompt], engine: "Engine", *, calibrate: bool = False,
                     log: Callable[[str], None] = print) -> Beliefs:
    """prompt_id -> {function name: log-prob of writing the name} for each prompt that leaves
    a choice of functions (`choosing`); `calibrate`: minus the name's log-prob in the
    content-free request (`content_free`, computed once per distinct rendering). Off by
    default: on the lift suite's tool requests it picked the right function no more often
    (tests/bench/results/function_fit.md) and costs a second pass."""
    own = engine.chat_template
    template = TOOLS_TEMPLATE.read_text() if needs_tools_template(own) else None
    tails_of: dict[str, dict[tuple[int, ...], None]] = {}  # shown request -> its distinct tails: each runs once
    wanted: list[tuple[str, str, tuple, tuple | None]] = []
    for p in prompts:
        if not choosing(p):
            continue
        texts = [call_text(engine, p, template)] + ([call_text(engine, content_free(p), template)] if calibrate else [])
        if any(t is None for t in texts):
            log(f"function fit: the chat template renders no tool call after the request; {p.prompt_id} skipped")
            continue
        for name in dict.fromkeys(f["name"] for f in offered_functions(p)):
            rows = [(shown, tuple(name_tokens(engine, call, name))) for shown, call in texts]
            for shown, ids in rows:
                tails_of.setdefault(shown, {})[ids] = None
            wanted.append((p.prompt_id, name, rows[0], rows[1] if calibrate else None))
    scored: dict[tuple, float] = {}
    for i, (shown, tails) in enumerate(tails_of.items()):
        scored.update(((shown, t), lp) for t, lp in zip(tails, engine.tail_logprobs(shown, [list(t) for t in tails])))
        if (i + 1) % 25 == 0:
            log(f"function fit: {i + 1}/{len(tails_of)} requests scored")
    out: Beliefs = {}
    for pid, name, row, prior in wanted:
        out.setdefault(pid, {})[name] = round(scored[row] - (scored[prior] if prior else 0.0), 4)
    return out
