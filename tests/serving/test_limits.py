"""Limits past the door (issue 13): counting a huge prompt leaves the event loop free, and a
per-key token rate limit. No vLLM: a request that passes every limit reaches the model
server, deliberately absent (503)."""
import asyncio
import json
import random
import string

import httpx
import pytest
from pydantic import ValidationError

from feedback.procs import free_port
from serving.app import create_app
from serving.settings import GatewaySettings
from tests.serving.test_errors import assert_openai_error, no_events
from tests.serving.test_guard import chat, make_client


class SpyTokenizer:
    """The real tokenizer, noting in `events` when a call starts and ends (a spy, not a fake:
    the tokenizing is real)."""

    def __init__(self, tok, events: list):
        self.tok, self.events = tok, events

    def _spy(self, name, *a, **kw):
        self.events.append("tokenize_start")
        try:
            return getattr(self.tok, name)(*a, **kw)
        finally:
            self.events.append("tokenize_end")

    def encode(self, *a, **kw):
        return self._spy("encode", *a, **kw)

    def encode_batch(self, *a, **kw):
        return self._spy("encode_batch", *a, **kw)


def megabyte_of_words() -> str:
    # Distinct random words: the tokenizer's word cache cannot make it quick.
    rng = random.Random(0)
    words, size = [], 0
    while size < 1_000_000:
        w = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10)))
        words.append(w)
        size += len(w) + 1
    return " ".join(words)


def test_counting_a_1mb_prompt_leaves_the_loop_free_spy_on_tokenizer(tmp_path):
    settings = GatewaySettings(data_dir=tmp_path, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                               vllm_url=f"http://127.0.0.1:{free_port()}", signing_key="k" * 32, auth="open",
                               max_body_bytes=3_000_000, max_prompt_tokens=10_000_000)
    app = create_app(settings)
    body = json.dumps({"model": "tao", "messages": [{"role": "user", "content": megabyte_of_words()}]})
    events: list[str] = []

    async def scenario():
        async with app.router.lifespan_context(app):
            counter = app.state.chat.limits.counter
            assert counter._tok is not None, "counts with the base model's tokenizer"
            counter._tok = SpyTokenizer(counter._tok, events)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:

                async def ticker():  # the loop's heartbeat: no tick can land while the loop is blocked
                    while True:
                        events.append("tick")
                        await asyncio.sleep(0)

                async def health():
                    while "tokenize_start" not in events:
                        await asyncio.sleep(0)
                    r = await client.get("/healthz")
                    events.append(f"health_{r.status_code}")

                async def big():
                    r = await client.post("/v1/chat/completions", content=body,
                                          headers={"content-type": "application/json"})
                    events.append(f"chat_{r.status_code}")

                tick = asyncio.create_task(ticker())
                await asyncio.wait_for(asyncio.gather(big(), health()), 120)
                tick.cancel()

    asyncio.run(scenario())
    during = events[events.index("tokenize_start"):events.index("tokenize_end")]
    assert "health_200" in during, "/healthz must be answered while the prompt is being tokenized"
    assert "tick" in during
    assert events.index("chat_503") > events.index("tokenize_end")  # counted, then on to the (absent) model


def test_short_prompts_are_still_counted_exactly(tmp_path):
    with make_client(tmp_path, max_prompt_tokens=50) as c:
        counter = c.app.state.chat.limits.counter
        text = "the cat sat on the mat " * 20
        exact = len(counter._tok.encode(text, add_special_tokens=False).ids) + 4
        assert asyncio.run(counter.count([{"role": "user", "content": text}])) == exact
        long = text * 400  # past the inline size: counted in a thread, the same number
        exact_long = len(counter._tok.encode(long, add_special_tokens=False).ids) + 4
        assert asyncio.run(counter.count([{"role": "user", "content": long}])) == exact_long


def test_token_rate_limit_is_429_with_retry_after_and_names_the_limit(tmp_path):
    with make_client(tmp_path, token_rate_limit="100/minute", rate_limit=None) as c:
        # "Hello" is 1 token + 4 for the message: each request below costs 5 + 40 = 45 tokens.
        for _ in range(2):
            assert_openai_error(chat(c, "alice", max_tokens=40), 503)
        r = chat(c, "alice", max_tokens=40)
        err = assert_openai_error(r, 429, "token_rate_limit_exceeded")
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert "TAO_TOKEN_RATE_LIMIT" in err["message"] and "100 per 1 minute" in err["message"]
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert_openai_error(chat(c, "alice", max_tokens=5), 503)  # 9 more still fit: 99 of 100
        assert_openai_error(chat(c, "bob", max_tokens=40, n=2), 503)  # another key: its own budget (85)
        assert_openai_error(chat(c, "bob", max_tokens=40), 429, "token_rate_limit_exceeded")
        # A request that could never fit is not told to retry.
        err = assert_openai_error(chat(c, "carol", max_tokens=100), 400, "token_rate_limit_exceeded", "max_tokens")
        assert "TAO_TOKEN_RATE_LIMIT" in err["message"]
        no_events(c)


def test_request_and_token_limits_say_which_one(tmp_path):
    with make_client(tmp_path, token_rate_limit="100/minute", rate_limit="2/minute") as c:
        assert_openai_error(chat(c, "alice", max_tokens=90), 503)  # 95 tokens
        assert_openai_error(chat(c, "alice", max_tokens=10), 429, "token_rate_limit_exceeded")
        for _ in range(2):
            assert_openai_error(chat(c, "bob", max_tokens=10), 503)  # 15 tokens each
        assert_openai_error(chat(c, "bob", max_tokens=10), 429, "rate_limit_exceeded")


def test_bad_token_rate_limit_names_the_variable():
    with pytest.raises(ValidationError, match="TAO_TOKEN_RATE_LIMIT"):
        GatewaySettings(token_rate_limit="lots")
