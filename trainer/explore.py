"""Explore: spend test-time compute to find better answers than the bare model gives.

Each strategy turns a logged prompt into (messages, sampling params) for vLLM's OpenAI
API, and `n` samples are drawn per strategy. Candidates are always trained against the
BARE prompt later, so the tuned model gives the scaffold's quality without the scaffold.

Strategies:
- plain, plain_hot: the bare prompt at two temperatures (the model's own spread);
- scaffold: a structured-output scaffold derived from what the prompt asks for: the JSON keys
  of its schema, forced tool or words (any wording); for a request that lets the model choose
  among tools, one skeleton per function of its arguments, each answer turned into a call of
  that function (the 135M model wrote almost no parseable call by itself);
- stepwise: think step by step, then "Answer:"; only the final answer is kept;
- fewshot: a demonstration turn built from this cycle's best-scored answer to ANOTHER
  prompt of the same shape: the same tools, or the same JSON keys asked for in any wording,
  or else the same task tag (self-bootstrapped: no human-written example anywhere).
  It runs in a second round, once the first round's candidates are scored.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

import httpx

from trainer.copying import copy_guide
from trainer.prompts import Candidate, Prompt, answer_turn, choosable_functions, offered_functions
from trainer.rewards.intent import requested_keys
from trainer.rewards.json_extraction import extract_json_object

log = logging.getLogger(__name__)

Strategy = Callable[[Prompt], tuple[list[dict], dict]]


class Job(NamedTuple):
    """One exploration request: `n` samples of `messages` with `params` for `prompt`.
    `as_call`: the request asks for one function's arguments as a JSON object in text (the
    135M model fills a skeleton more often than it writes a parseable call); each answer
    becomes a call of that function, and the request's own tools are not sent with it."""
    prompt: Prompt
    strategy: str
    messages: list[dict]
    params: dict
    as_call: str | None = None

    @property
    def guided(self) -> bool:
        """Decoded under a schema of ours (see `guide`): strategies' params carry no other
        response_format (the client's own travels in the prompt's contract)."""
        return "response_format" in self.params


_ANSWER_RE = re.compile(r"(?:final answer|answer)\s*:\s*", re.IGNORECASE)


def plain(prompt: Prompt) -> tuple[list[dict], dict]:
    return prompt.messages, {"temperature": 0.8}


def plain_hot(prompt: Prompt) -> tuple[list[dict], dict]:
    return prompt.messages, {"temperature": 1.1, "top_p": 0.95}


def scaffold(prompt: Prompt) -> tuple[list[dict], dict]:
    keys = requested_keys(prompt)  # from the contract (schema, forced tool) or the words, any wording
    if keys:
        skeleton = json.dumps({k: "..." for k in keys})
        system = ("You extract data from text. Reply with only one JSON object with exactly the keys "
                  f"{', '.join(keys)}, each value copied from the text. No other words.")
        msgs = [{"role": "system", "content": system}] + _append_to_last_user(
            prompt.messages, f"\n\nReply with only this JSON object filled in: {skeleton}")
    else:
        system = "Answer correctly and concisely. Give exactly what was asked for, in the format asked for."
        msgs = [{"role": "system", "content": system}] + _without_system(prompt.messages)
    return msgs, {"temperature": 0.7}


# Guided decoding of scaffolds: vLLM's structured outputs hold a scaffold's answer to an object
# with exactly the keys asked for (typed, for a function's arguments), so samples differ in
# their values only. `make bench-explore` (tests/bench/results/explore_guided.md; 2-core
# AVX-512 Xeon, base SmolLM2-135M, n=4, temperature 0.7, the benchmark's traffic prompts):
# argument skeletons of 24 tool requests gave 49 exactly right calls of 576 against 7 unguided
# (10 of 24 requests had one, against 3-4) in 0.40 of the time; key skeletons of 30 extraction
# requests, mean field score 0.317 against 0.119 in 0.52 of the time.
SCALAR = {"type": ["string", "number", "integer", "boolean"]}


def guide(schema: dict, name: str) -> dict:
    """A json_schema response_format for vLLM."""
    return {"response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}}


def keys_guide(prompt: Prompt, keys: list[str]) -> dict:
    """Guided decoding for a key scaffold whose keys the request does not already impose: not
    for a request with its own json_schema (sent along with the scaffold) or with tools (a
    forced function is already guided by vLLM; a response_format beside tools could be refused)."""
    rf = prompt.contract.get("response_format")
    if prompt.contract.get("tools") or (isinstance(rf, dict) and rf.get("type") == "json_schema"):
        return {}
    return guide({"type": "object", "properties": {k: SCALAR for k in keys}, "required": list(keys),
                  "additionalProperties": False}, "answer")


# A client's own parameters schema goes to vLLM's grammar compiler, which in serving saw it
# only when that client forced the function. Compile cost grows with the schema, so one
# tenant's deliberately heavy schema could slow every cycle's exploration: past these bounds
# the skeleton is explored unguided, as before guiding (the verifiers still judge it). The
# generated functions of the lift benchmark are at most 187 characters and depth 3.
MAX_GUIDE_CHARS = 4000
MAX_GUIDE_DEPTH = 8


def _depth(value, limit: int) -> int:
    """Nesting depth of dicts and lists, counted no further than `limit` + 1."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in items), default=0)


def guidable(schema: dict) -> bool:
    """Small and shallow enough to compile for every cycle's exploration, and self-contained:
    a `$ref` (possibly recursive) is left to the verifiers."""
    text = json.dumps(schema)
    return len(text) <= MAX_GUIDE_CHARS and '"$ref"' not in text and _depth(schema, MAX_GUIDE_DEPTH) <= MAX_GUIDE_DEPTH


def arguments_guide(fn: dict) -> dict:
    """Guided decoding for a function's argument skeleton: its own parameters schema, closed to
    keys it does not name unless it says otherwise; none for a schema with no properties, or
    one too large, too deep or with references (`guidable`)."""
    params = fn.get("parameters")
    if not isinstance(params, dict) or not isinstance(params.get("properties"), dict) or not params["properties"]:
        return {}
    if not guidable(params):
        return {}
    return guide({"additionalProperties": False, **params}, re.sub(r"[^A-Za-z0-9_-]", "_", fn["name"])[:64] or "f")


def _functions(prompt: Prompt) -> list[dict]:
    """The functions ({"name", "parameters"}) a request lets the model choose among; none when
    it forbids calls or forces one. A forced call is explored by the plain scaffold with the
    contract sent along: vLLM then makes the answer a call of that function, and the scaffold
    names its keys (one e2e loop run: 6 pairs from 10 forced-tool requests; with skeletons 1)."""
    return choosable_functions(prompt)[:MAX_FUNCTIONS]


MAX_FUNCTIONS = 4  # skeleton requests per tool prompt: one per offered function, at most this many


def call_scaffolds(prompt: Prompt) -> list[tuple[str, list[dict], dict]]:
    """For a request that lets the model choose among tools: per function, (name, messages,
    params) asking for that function's arguments as a filled-in JSON skeleton. Every value is
    "..." whatever its type: with 0 for a number the 135M model left the 0 in most answers
    (measured on 12 benchmark prompts, 2026-12-06); a quoted number it
    does write is read as a number by the verifier (trainer/rewards/contract.py COERCIBLE).
    Which function fits is left to the verifiers: arguments made up to fit the wrong
    function are not in the conversation, and score below the right one's."""
    return [(fn["name"], skeleton_request(prompt, fn), {"temperature": 0.7}) for fn in _functions(prompt)]


def skeleton_request(prompt: Prompt, fn: dict) -> list[dict]:
    """The messages asking for `fn`'s arguments as a filled-in JSON skeleton (see call_scaffolds)."""
    params = fn.get("parameters") if isinstance(fn.get("parameters"), dict) else {}
    props = params.get("properties") if isinstance(params.get("properties"), dict) else {}
    skeleton = json.dumps(dict.fromkeys(props, "..."))
    system = (f"You fill in the arguments of the function {fn['name']}"
              + (f" ({fn['description']})" if isinstance(fn.get("description"), str) else "")
              + ". Reply with only one JSON object with exactly its keys, each value taken from the user's "
                "message. No other words.")
    return [{"role": "system", "content": system}] + _append_to_last_user(
        prompt.messages, f"\n\nReply with only this JSON object filled in: {skeleton}")


def _guided(job: Job) -> Job:
    """`job` with guided decoding where its scaffold has keys to hold it to (see `guide`)."""
    if job.strategy != "scaffold":
        return job
    if job.as_call:
        fn = next((f for f in offered_functions(job.prompt) if f["name"] == job.as_call), {})
        g = arguments_guide(fn)
    else:
        keys = requested_keys(job.prompt)
        g = keys_guide(job.prompt, keys) if keys else {}
    return job._replace(params={**job.params, **g}) if g else job


def copy_jobs(prompt: Prompt) -> list[Job]:
    """The `copy` strategy (trainer/copying.py): the scaffold's requests, each value held to a
    span or a number of the request. Per offered function for a tool request (the forced one
    only, when the client forces one), else for the keys asked for (in words, or by the
    client's own json_schema); none for other requests."""
    if prompt.contract.get("tools"):
        choice = prompt.contract.get("tool_choice")
        forced = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
        fns = [f for f in offered_functions(prompt) if f["name"] == forced] if forced else _functions(prompt)
        jobs = []
        for fn in fns:  # none for tool_choice "none": choosable_functions gives none
            schema = arguments_guide(fn)  # its parameters, closed, when small enough to compile
            if schema:
                spec = schema["response_format"]["json_schema"]
                g = copy_guide(spec["schema"], prompt, spec["name"])
                if g:
                    jobs.append(Job(prompt, "copy", skeleton_request(prompt, fn), {"temperature": 0.7, **g},
                                    as_call=fn["name"]))
        return jobs
    rf = prompt.contract.get("response_format")
    spec = rf.get("json_schema") if isinstance(rf, dict) and rf.get("type") == "json_schema" else None
    own = spec.get("schema") if isinstance(spec, dict) else None
    keys = requested_keys(prompt)
    if isinstance(own, dict) and guidable(own):
        schema = own
    elif keys and own is None:
        schema = keys_guide(prompt, keys)["response_format"]["json_schema"]["schema"]
    else:
        return []
    g = copy_guide(schema, prompt, "answer")
    if not g:
        return []
    msgs, params = scaffold(prompt)
    return [Job(prompt, "copy", msgs, {**params, **g})]


def stepwise(prompt: Prompt) -> tuple[list[dict], dict]:
    system = ("Think step by step about the request. Then write a last line that starts with 'Answer:' followed "
              "by only the final answer, in exactly the format the user asked for.")
    return [{"role": "system", "content": system}] + _without_system(prompt.messages), {"temperature": 0.7}


def final_answer(strategy: str, text: str) -> str:
    """What a strategy's output contributes as a candidate: for stepwise, only the answer."""
    if strategy != "stepwise":
        return text
    parts = _ANSWER_RE.split(text)
    return parts[-1].strip() if len(parts) > 1 else text


def fewshot(prompt: Prompt, exemplar: tuple[Prompt, Candidate]) -> tuple[list[dict], dict]:
    demo_prompt, demo_answer = exemplar
    demo = [m for m in _without_system(demo_prompt.messages) if m.get("role") == "user"][-1:]
    msgs = demo + [answer_turn(demo_answer.text, demo_answer.tool_calls)] + _without_system(prompt.messages)
    return msgs, {"temperature": 0.7}


ROUND_ONE: dict[str, Strategy] = {"plain": plain, "plain_hot": plain_hot, "scaffold": scaffold, "stepwise": stepwise}
# Every strategy TAO_EXPLORE_STRATEGIES may name: round one's, `copy` (round one, only for
# requests with keys or tools: copy_jobs), then the few-shot round.
STRATEGIES = (*ROUND_ONE, "copy", "fewshot")


def _without_system(messages: list[dict]) -> list[dict]:
    return [dict(m) for m in messages if m.get("role") != "system"]


def _append_to_last_user(messages: list[dict], suffix: str) -> list[dict]:
    out = _without_system(messages)
    for m in reversed(out):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            m["content"] = m["content"] + suffix
            break
    return out


def task_shape(prompt: Prompt) -> tuple:
    """What makes one prompt's answer a fitting demonstration for another: the tools offered
    (by name), else the JSON keys asked for (in any wording), else the client's task tag.
    Most clients send no `metadata.task`; two requests for the same keys or the same tools
    are the same kind of task whatever their tags or words."""
    tools = sorted(fn["name"] for fn in offered_functions(prompt))
    if tools:
        return ("tools", *tools)
    keys = requested_keys(prompt)
    if keys:
        return ("keys", *sorted(keys))
    return ("task", prompt.task)


Exemplars = dict[tuple, list[tuple[Prompt, Candidate]]]  # task shape -> [(prompt, its best answer)]


def pick_exemplars(prompts: list[Prompt], best: dict[str, tuple[Candidate, float]], min_score: float,
                   per_shape: int = 8) -> Exemplars:
    """The best answers of this round, per task shape, that scored at least `min_score`."""
    by_shape: dict[tuple, list[tuple[float, Prompt, Candidate]]] = {}
    for p in prompts:
        if p.prompt_id in best and best[p.prompt_id][1] >= min_score:
            by_shape.setdefault(task_shape(p), []).append((best[p.prompt_id][1], p, best[p.prompt_id][0]))
    return {t: [(p, a) for _, p, a in sorted(v, key=lambda x: -x[0])[:per_shape]] for t, v in by_shape.items()}


def fewshot_jobs(prompts: list[Prompt], exemplars: Exemplars) -> list[Job]:
    """One few-shot request per prompt that has an exemplar from a different prompt of its shape."""
    jobs = []
    for i, p in enumerate(prompts):
        others = [e for e in exemplars.get(task_shape(p), []) if e[0].prompt_id != p.prompt_id]
        if others:
            msgs, params = fewshot(p, others[i % len(others)])  # spread the demonstrations around
            jobs.append(Job(p, "fewshot", msgs, params))
    return jobs


def round_one_jobs(prompts: list[Prompt], strategies: list[str], guided: bool = True) -> list[Job]:
    """Every first-round request. `guided`: scaffolds decode under a schema (see `guide`)."""
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown exploration strategies {unknown}; known: {list(STRATEGIES)}")
    jobs = []
    for p in prompts:
        for name in strategies:
            if name == "copy":
                jobs += copy_jobs(p)
            elif name == "scaffold" and (calls := call_scaffolds(p)):
                jobs += [Job(p, name, msgs, params, as_call=fn) for fn, msgs, params in calls]
            elif name in ROUND_ONE:
                jobs.append(Job(p, name, *ROUND_ONE[name](p)))
    return [_guided(j) for j in jobs] if guided else jobs


class Pace:
    """The exploration engine's measured decoding speed, and request timeouts that follow it.

    A fixed timeout cannot fit every machine: 300 s was measured too short for step-by-step
    requests (n=4, 320 tokens, 8 at once) on a 2-core AVX2 CPU decoding 24 tok/s in all,
    and is far too long where vLLM decodes 300 tok/s. So the timeout of a request is `slack`
    times the time its tokens take at the speed measured so far, with `concurrency` requests
    sharing the engine; until the first answer there is no measure, and `first_s` holds.
    """

    def __init__(self, concurrency: int, first_s: float = 1800.0, floor_s: float = 60.0, slack: float = 3.0):
        self.concurrency, self.first_s, self.floor_s, self.slack = concurrency, first_s, floor_s, slack
        self._t0: float | None = None
        self._tokens = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._t0 is None:
                self._t0 = time.monotonic()

    def answered(self, completion_tokens: int) -> None:
        with self._lock:
            self._tokens += completion_tokens

    def tokens_per_s(self) -> float | None:
        """Tokens decoded per second by all requests together, since the first was sent."""
        with self._lock:
            if self._t0 is None or not self._tokens:
                return None
            return self._tokens / max(time.monotonic() - self._t0, 1e-3)

    def timeout_s(self, tokens: int) -> float:
        """How long a request of up to `tokens` completion tokens may take."""
        tps = self.tokens_per_s()
        if tps is None:
            return self.first_s
        return max(self.floor_s, self.slack * tokens * self.concurrency / tps)


def run_jobs(jobs: list[Job], vllm_url: str, model: str, n: int, max_tokens: int,
             concurrency: int, progress: Callable[[int, int], None] | None = None,
             seed: int | None = None, pace: Pace | None = None) -> dict[str, list[Candidate]]:
    """Send every request; candidates per prompt_id (failed requests are logged and skipped).
    With `seed`, each request carries a sampling seed derived from it and the request itself, so
    the same model on the same prompts explores the same candidates (vLLM gives the n samples
    seed, seed+1, ...)."""
    out: dict[str, list[Candidate]] = {}
    done = 0
    pace = pace or Pace(concurrency)
    with httpx.Client(base_url=vllm_url) as client:

        def run(job: Job):
            p, name, messages, params, as_call = job
            # Step-by-step needs room to think before it answers.
            budget = max_tokens * 2 if name == "stepwise" else max_tokens
            # The request's own contract (tools, response_format) goes with it: the candidates
            # answer what the client asked for, and the contract verifiers can judge them.
            # Not for step-by-step, whose reasoning before the answer no schema allows, nor
            # for an argument skeleton, answered in text and made a call here.
            contract = {} if name == "stepwise" or as_call else p.contract
            body = {"model": model, "messages": messages, "n": n, "max_tokens": budget, **contract, **params}
            if seed is not None:
                body["seed"] = request_seed(seed, name, messages)
            pace.start()
            timeout = pace.timeout_s(n * budget)
            r = client.post("/v1/chat/completions", json=body, timeout=httpx.Timeout(timeout, connect=10))
            if job.guided and r.status_code == 400:
                # A schema of the client's own (a function's parameters) that vLLM's grammar
                # cannot take: explore unguided rather than lose the request.
                log.info("explore %s/%s: guided decoding refused (%s); sent again without it",
                         p.prompt_id, name, r.text[:200])
                body.pop("response_format", None)
                if "response_format" in contract:  # the client's own (json_object) stays
                    body["response_format"] = contract["response_format"]
                r = client.post("/v1/chat/completions", json=body, timeout=httpx.Timeout(timeout, connect=10))
            r.raise_for_status()
            data = r.json()
            pace.answered(int((data.get("usage") or {}).get("completion_tokens") or 0))
            if as_call:
                return [as_call_candidate(as_call, c["message"].get("content") or "", name) for c in data["choices"]]
            return [Candidate(final_answer(name, c["message"].get("content") or ""), name,
                              tool_calls=[{"name": (t.get("function") or {}).get("name", ""),
                                           "arguments": (t.get("function") or {}).get("arguments") or ""}
                                          for t in c["message"].get("tool_calls") or []])
                    for c in data["choices"]]

        with ThreadPoolExecutor(concurrency) as pool:
            for job, fut in [(j, pool.submit(run, j)) for j in jobs]:
                try:
                    out.setdefault(job[0].prompt_id, []).extend(fut.result())
                except Exception as e:
                    log.warning("explore %s/%s failed: %s", job[0].prompt_id, job[1], e)
                done += 1
                if progress:
                    progress(done, len(jobs))
    return out


def as_call_candidate(function: str, text: str, strategy: str) -> Candidate:
    """An argument skeleton's answer as a call of `function`; text with no JSON object stays
    text (no call: the tool-call verifier judges it as an answer that did not call)."""
    obj, _ = extract_json_object(text)
    if obj is None:
        return Candidate(text, strategy)
    return Candidate("", strategy, tool_calls=[{"name": function, "arguments": json.dumps(obj)}])


def request_seed(seed: int, strategy: str, messages: list[dict]) -> int:
    """A stable 31-bit seed for one exploration request: crc32, not hash() (salted per process)."""
    text = json.dumps([seed, strategy, messages], sort_keys=True)
    return zlib.crc32(text.encode()) & 0x7FFF_FFFF


def served_model_name(vllm_url: str) -> str:
    """vLLM serves one model; ask it for the name rather than configuring it twice."""
    r = httpx.get(vllm_url + "/v1/models", timeout=10)
    r.raise_for_status()
    return r.json()["data"][0]["id"]
