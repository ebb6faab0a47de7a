"""Limits checked before vLLM is asked: prompt length, n, max_tokens, and rates per API key.

Prompt length is counted in the served model's own tokens with the `tokenizers` library
(tokenizer.json of TAO_BASE_MODEL; a trained version keeps its tokenizer), so the limit
means what it says. Without a tokenizer.json there it falls back to an estimate of 1 token
per 3 characters, and says so at start. A long prompt is counted in a worker thread, so a
1 MB body never stalls the event loop (and every other request) while it is tokenized.

Rates (the `limits` library, moving window, in memory: one gateway process): requests per
key (TAO_RATE_LIMIT, checked in serving/guard.py before the body is read) and tokens per key
(TAO_TOKEN_RATE_LIMIT, here: a request costs its prompt tokens plus n x max_tokens, what it
may make vLLM do, known only once the body is read and counted).
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from pathlib import Path

from serving.errors import OpenAIError

log = logging.getLogger(__name__)
PER_MESSAGE_OVERHEAD = 4  # role markers the chat template adds around each message
# Below this many characters a prompt is tokenized on the event loop: about a millisecond,
# cheaper than the hand-off to a thread. Above it, in a thread.
INLINE_CHARS = 8192


class RateLimiter:
    """Moving-window limit per key, in memory (one gateway process; see README for replicas)."""

    def __init__(self, rate: str | None):
        self.item = None
        if rate:
            from limits import parse, storage, strategies

            self.item = parse(rate)
            self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    def hit(self, who: str, cost: int = 1) -> float | None:
        """None if allowed (and counted); else seconds until `cost` would be."""
        if self.item is None or self._limiter.hit(self.item, who, cost=cost):
            return None
        reset = self._limiter.get_window_stats(self.item, who).reset_time
        return max(0.0, reset - time.time())


class PromptCounter:
    def __init__(self, model_dir: Path | None):
        self._tok = None
        path = model_dir / "tokenizer.json" if model_dir else None
        if path and path.exists():
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(str(path))
        else:
            log.warning("no tokenizer.json at %s: prompt length is estimated (1 token per 3 characters)", path)

    async def count(self, messages: list[dict]) -> int:
        texts = [_text(m.get("content")) for m in messages]
        if self._tok is None:
            return sum(len(t) // 3 + PER_MESSAGE_OVERHEAD for t in texts)
        overhead = PER_MESSAGE_OVERHEAD * len(texts)
        if sum(map(len, texts)) <= INLINE_CHARS:
            # encode, not encode_batch, on the loop: encode_batch lets go of the GIL, and getting
            # it back from the producer's threads stalled the event loop (250 us a call against 20 us).
            return sum(len(self._tok.encode(t, add_special_tokens=False).ids) for t in texts) + overhead
        # In a thread, and encode_batch there: it lets go of the GIL while it works, where
        # encode holds it, and a thread holding the GIL would stall the loop all the same.
        encodings = await asyncio.to_thread(self._tok.encode_batch, texts, add_special_tokens=False)
        return sum(len(e.ids) for e in encodings) + overhead


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: count the text parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


class RequestLimits:
    def __init__(self, counter: PromptCounter, max_prompt_tokens: int, max_n: int, max_tokens: int,
                 token_rate: str | None = None):
        self.counter, self.max_prompt_tokens, self.max_n, self.max_tokens = counter, max_prompt_tokens, max_n, max_tokens
        self.token_limiter = RateLimiter(token_rate)

    async def check(self, body: dict, who: str) -> int:
        """Raise a 400 naming the limit, or a 429 when `who` (the caller's tenant) is over
        TAO_TOKEN_RATE_LIMIT; return the prompt's token count. A request with no max_tokens
        gets the limit as its max_tokens."""
        n = body.get("n")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= self.max_n):
            raise OpenAIError(400, f"n must be an integer from 1 to {self.max_n} (TAO_MAX_N), got {n!r}",
                              "invalid_value", "n")
        for param in ("max_tokens", "max_completion_tokens"):
            v = body.get(param)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= self.max_tokens):
                raise OpenAIError(400, f"{param} must be an integer from 1 to {self.max_tokens} "
                                       f"(TAO_MAX_TOKENS_LIMIT), got {v!r}", "invalid_value", param)
        if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
            # OpenAI's default is "until the context is full": on a shared server one such
            # request can hold a slot for minutes. The limit is the default.
            body["max_tokens"] = self.max_tokens
        tokens = await self.counter.count(body["messages"])
        if tokens > self.max_prompt_tokens:
            raise OpenAIError(400, f"the prompt is {tokens} tokens; this service accepts at most "
                                   f"{self.max_prompt_tokens} (TAO_MAX_PROMPT_TOKENS)",
                              "context_length_exceeded", "messages")
        self._charge(body, tokens, who)
        return tokens

    def _charge(self, body: dict, tokens: int, who: str) -> None:
        item = self.token_limiter.item
        if item is None:
            return
        asked = body.get("max_tokens") or body.get("max_completion_tokens")
        cost = tokens + (body.get("n") or 1) * asked
        if cost > item.amount:  # never allowed, however long the client waits: not a 429
            raise OpenAIError(400, f"this request may use {cost} tokens (prompt {tokens} + n x max_tokens), more "
                                   f"than the whole token rate limit {item} (TAO_TOKEN_RATE_LIMIT): ask for fewer "
                                   "max_tokens or a shorter prompt", "token_rate_limit_exceeded", "max_tokens")
        wait = self.token_limiter.hit(who, cost)
        if wait is not None:
            raise OpenAIError(429, f"token rate limit {item} for this API key exceeded (TAO_TOKEN_RATE_LIMIT; this "
                                   f"request: {cost} tokens, prompt + n x max_tokens); retry in {math.ceil(wait)} s",
                              "token_rate_limit_exceeded", headers={"Retry-After": str(max(1, math.ceil(wait)))})
