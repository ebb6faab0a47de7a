"""Per-request limits checked before vLLM is asked: prompt length, n, max_tokens.

Prompt length is counted in the served model's own tokens with the `tokenizers` library
(tokenizer.json of TAO_BASE_MODEL; a trained version keeps its tokenizer), so the limit
means what it says. Without a tokenizer.json there it falls back to an estimate of 1 token
per 3 characters, and says so at start.
"""
from __future__ import annotations

import logging
from pathlib import Path

from serving.errors import OpenAIError

log = logging.getLogger(__name__)
PER_MESSAGE_OVERHEAD = 4  # role markers the chat template adds around each message


class PromptCounter:
    def __init__(self, model_dir: Path | None):
        self._tok = None
        path = model_dir / "tokenizer.json" if model_dir else None
        if path and path.exists():
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(str(path))
        else:
            log.warning("no tokenizer.json at %s: prompt length is estimated (1 token per 3 characters)", path)

    def count(self, messages: list[dict]) -> int:
        texts = [_text(m.get("content")) for m in messages]
        if self._tok is None:
            return sum(len(t) // 3 + PER_MESSAGE_OVERHEAD for t in texts)
        # encode, not encode_batch: encode_batch lets go of the GIL, and getting it back from
        # the producer's threads stalled the event loop (250 us a call against 20 us).
        return sum(len(self._tok.encode(t, add_special_tokens=False).ids) + PER_MESSAGE_OVERHEAD for t in texts)


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: count the text parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


class RequestLimits:
    def __init__(self, counter: PromptCounter, max_prompt_tokens: int, max_n: int, max_tokens: int):
        self.counter, self.max_prompt_tokens, self.max_n, self.max_tokens = counter, max_prompt_tokens, max_n, max_tokens

    def check(self, body: dict) -> int:
        """Raise a 400 naming the limit; return the prompt's token count. A request with no
        max_tokens gets the limit as its max_tokens."""
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
        tokens = self.counter.count(body["messages"])
        if tokens > self.max_prompt_tokens:
            raise OpenAIError(400, f"the prompt is {tokens} tokens; this service accepts at most "
                                   f"{self.max_prompt_tokens} (TAO_MAX_PROMPT_TOKENS)",
                              "context_length_exceeded", "messages")
        return tokens
