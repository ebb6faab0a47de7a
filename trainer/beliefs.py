"""What the live model believes about a request: for each request offering a choice of tools,
the log-probability of each function's name where its call would begin
(trainer/rewards/function_fit.py says why and how they score).

The call is rendered by the model's own chat template, or tao's tools template for a model
whose own shows no tools (schemas/chat_template.py), exactly as vLLM renders it for the
served model: an assistant turn calling a placeholder function is rendered, the text before
the placeholder is where a call's name begins, and each offered name is scored there (with
the character that closes it, so a name that is the start of another does not win by being
short). Costs one forward pass per offered function, on transformers in the cycle's process.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Callable

from schemas.chat_template import TOOLS_TEMPLATE, needs_tools_template
from trainer.prompts import Prompt, answer_turn, offered_functions
from trainer.rewards.function_fit import Beliefs

if TYPE_CHECKING:
    from trainer.generate import Engine

_PLACEHOLDER = "tao_placeholder_function_7c1e"


def choosing(prompt: Prompt) -> bool:
    """Does the request leave the model a choice of functions? (several offered, and
    tool_choice neither "none" nor one forced function)"""
    choice = prompt.contract.get("tool_choice")
    if choice == "none" or isinstance(choice, dict):
        return False
    return len({f["name"] for f in offered_functions(prompt)}) >= 2


def call_head(engine: "Engine", prompt: Prompt, template: str | None) -> tuple[str, str] | None:
    """(the rendered text up to where a call's function name begins, the text that closes a
    name), or None where the template renders no call."""
    turn = answer_turn("", [{"name": _PLACEHOLDER, "arguments": "{}"}])
    text = engine.render(prompt.messages + [turn], tools=prompt.contract.get("tools"), chat_template=template)
    at = text.find(_PLACEHOLDER)
    if at < 0:
        return None
    after = text[at + len(_PLACEHOLDER): at + len(_PLACEHOLDER) + 1]
    return text[:at], after


def content_free(prompt: Prompt) -> Prompt:
    """The request with its user turns' words taken away (tools, system turn and roles kept):
    what the model would name with nothing to go on. Its log-probs are each name's prior (the
    model favours a function for its place in the list or its name alone: "Calibrate before
    use", Zhao et al. 2021); subtracting them leaves what the request's words add."""
    messages = [{**m, "content": ""} if m.get("role") == "user" else m for m in prompt.messages]
    return Prompt(prompt.prompt_id, messages, contract=prompt.contract)


def function_beliefs(prompts: list[Prompt], engine: "Engine", *, calibrate: bool = False,
                     log: Callable[[str], None] = print) -> Beliefs:
    """prompt_id -> {function name: log-prob of the name} for each prompt that leaves a choice
    of functions (`choosing`); `calibrate`: minus the name's log-prob in the content-free
    request (`content_free`, computed once per distinct tools list and system turn). Off by
    default: on the lift suite's tool requests it picked the right function no more often
    (tests/bench/results/function_fit.md) and costs a second forward pass."""
    own = engine.chat_template
    template = TOOLS_TEMPLATE.read_text() if needs_tools_template(own) else None
    tails_of: dict[str, dict[str, None]] = {}  # head -> its distinct tails: each head runs once
    wanted: list[tuple[str, str, tuple[str, str], tuple[str, str] | None]] = []
    for p in prompts:
        if not choosing(p):
            continue
        head = call_head(engine, p, template)
        if head is None:
            log(f"function fit: the chat template renders no tool call; {p.prompt_id} skipped")
            continue
        prior = call_head(engine, content_free(p), template) if calibrate else None
        for name in dict.fromkeys(f["name"] for f in offered_functions(p)):
            tail = json.dumps(name, ensure_ascii=False)[1:-1]  # as the template's tojson writes it
            row = (head[0], tail + head[1])
            prior_row = (prior[0], tail + prior[1]) if prior else None
            for h, t in [row] + ([prior_row] if prior_row else []):
                tails_of.setdefault(h, {})[t] = None
            wanted.append((p.prompt_id, name, row, prior_row))
    scored: dict[tuple[str, str], float] = {}
    for i, (h, tails) in enumerate(tails_of.items()):
        scored.update(((h, t), lp) for t, lp in zip(tails, engine.tail_logprobs(h, list(tails))))
        if (i + 1) % 25 == 0:
            log(f"function fit: {i + 1}/{len(tails_of)} requests scored")
    out: Beliefs = {}
    for pid, name, row, prior_row in wanted:
        out.setdefault(pid, {})[name] = round(scored[row] - (scored[prior_row] if prior_row else 0.0), 4)
    return out
