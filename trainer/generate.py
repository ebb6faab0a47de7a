"""Batched generation with transformers, for evaluation inside a cycle.

The gate compares the current and the candidate model on the same engine, so a difference in
answers is a difference in weights, not in serving stacks. The production vLLM is left alone:
evaluation must not load the server users are on.

`Engine` loads one model once, on first use, for all it is asked: greedy answers, sampled
answers and the log-probs of given answers (the gate needs all three of a candidate).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable


class Engine:
    def __init__(self, model_dir: Path, *, dtype: str = "float32", batch_size: int = 16,
                 log: Callable[[str], None] = print):
        """`dtype`: the machine's (feedback.hardware.choose_dtype). Output differs a little
        between dtypes, so both models of a comparison use the same one."""
        self.model_dir, self.dtype, self.batch_size, self.log = Path(model_dir), dtype, batch_size, log
        self._loaded = None

    def _load(self):
        if self._loaded is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.model_dir)
            tok.padding_side = "left"  # decoder-only: pad on the left so every row ends at its prompt
            model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=getattr(torch, self.dtype))
            model.eval()
            self._loaded = tok, model
        return self._loaded

    def _batches(self, conversations: list[list[dict]], what: str):
        tok, _ = self._load()
        for i in range(0, len(conversations), self.batch_size):
            batch = conversations[i : i + self.batch_size]
            texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in batch]
            yield i, tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            self.log(f"{what} {self.model_dir.name}: {min(i + self.batch_size, len(conversations))}/{len(conversations)}")

    def generate(self, conversations: list[list[dict]], *, max_new_tokens: int = 128) -> list[str]:
        """Greedy answers."""
        out: list[str] = []
        for _, enc in self._batches(conversations, "generate"):
            out += [a[0] for a in self._decode(enc, repeats=1, max_new_tokens=max_new_tokens)]
        return out

    def sample(self, conversations: list[list[dict]], *, samples: int, temperature: float,
               max_new_tokens: int = 64, seed: int = 0) -> list[list[str]]:
        """`samples` answers per conversation at `temperature`, with common random numbers:
        the numbers sample j of conversation i draws, one a step, come from a generator seeded
        by (`seed`, i) alone, whichever rows share its batch or end before it. Two models
        sampled over the same conversations draw the same number for the same answer at the
        same step, and where their next-token distributions are close they pick the same
        token. Two near-identical models then give near-identical samples, and their paired
        difference measures the weights, not the dice (the gate's probes)."""
        out: list[list[str]] = []
        for i, enc in self._batches(conversations, "sample"):
            seeds = [seed * 1_000_003 + i + r for r in range(enc["attention_mask"].shape[0])]
            out += self._decode(enc, repeats=samples, max_new_tokens=max_new_tokens, temperature=temperature,
                                seeds=seeds)
        return out

    def _decode(self, enc, *, repeats: int, max_new_tokens: int, temperature: float = 0.0,
                seeds: list[int] | None = None) -> list[list[str]]:
        """`repeats` answers to each row of `enc` (left-padded prompts): greedy at temperature
        0, else sampled by inverse CDF (an exact draw from the softmax at `temperature`, no
        top-k or top-p), with the numbers of `seeds` (one per prompt). Written here rather
        than with transformers' generate, which was two thirds of the gate's time on a 2-core
        CPU for two reasons (docs/measurements.md): it runs each prompt's prefill once per
        sample, and it keeps computing every row until the longest answer ends. Here the
        prompts run once and their KV cache is repeated, and a row that has ended leaves the
        batch."""
        import torch

        tok, model = self._load()
        if max_new_tokens <= 0:
            return [[""] * repeats for _ in range(enc["attention_mask"].shape[0])]
        eos = model.generation_config.eos_token_id
        eos = torch.tensor(sorted({*(eos if isinstance(eos, list) else [eos]), tok.eos_token_id} - {None}))
        mask = enc["attention_mask"]
        rows = mask.shape[0] * repeats
        tokens: list[list[int]] = [[] for _ in range(rows)]
        with torch.inference_mode():
            out = model(input_ids=enc["input_ids"], attention_mask=mask,
                        position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=True, logits_to_keep=1)
            cache, logits = out.past_key_values, out.logits[:, -1]
            if repeats > 1:
                cache.batch_repeat_interleave(repeats)
                logits, mask = logits.repeat_interleave(repeats, 0), mask.repeat_interleave(repeats, 0)
            live = torch.arange(rows)
            if temperature > 0:  # each prompt's numbers for all its answers and steps, drawn up front
                draws = torch.cat([torch.rand(repeats, max_new_tokens, generator=torch.Generator().manual_seed(s),
                                              dtype=torch.float32) for s in seeds or [0] * (rows // repeats)])
            for step in range(max_new_tokens):
                if temperature > 0:
                    # Row r's number at this step, whichever rows have ended; the token is where
                    # it falls in the cumulative distribution. Two models given the same number
                    # pick the same token unless their distributions differ around it.
                    u = draws[live, step : step + 1]
                    cdf = torch.softmax(logits.float() / temperature, dim=-1).cumsum(-1)
                    # u scaled to the cdf's own total (1 only up to rounding) and right=True: a
                    # draw past the rounded end, or a u of 0, never lands on a token of
                    # probability 0 (the last id, or the first).
                    nxt = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1)
                    nxt = nxt.clamp(max=cdf.shape[-1] - 1)
                else:
                    nxt = logits.argmax(-1)
                for r, t in zip(live.tolist(), nxt.tolist()):
                    tokens[r].append(t)
                going = ~torch.isin(nxt, eos)
                if step == max_new_tokens - 1 or not going.any():
                    break
                if not going.all():
                    keep = going.nonzero().squeeze(1)
                    cache.batch_select_indices(keep)
                    live, nxt, mask = live[keep], nxt[keep], mask[keep]
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
                out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                            past_key_values=cache, use_cache=True)
                logits = out.logits[:, -1]
        texts = [t.strip() for t in tok.batch_decode(tokens, skip_special_tokens=True)]
        return [texts[j : j + repeats] for j in range(0, rows, repeats)]

    def logprobs(self, conversations: list[list[dict]], answers: list[str]) -> list[tuple[float, int]]:
        """(sum of log-probs, tokens) of each answer after its conversation under this model:
        how likely it is to say what another model said (the gate's drift)."""
        tok, _ = self._load()
        heads = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
        return self.continuation_logprobs(heads, answers)

    def render(self, conversation: list[dict], *, tools: list[dict] | None = None, chat_template: str | None = None,
               add_generation_prompt: bool = False) -> str:
        """`conversation` as this model's tokenizer renders it (with `tools`, under
        `chat_template` when given): the text a continuation is scored after."""
        tok, _ = self._load()
        return tok.apply_chat_template(conversation, tools=tools, chat_template=chat_template, tokenize=False,
                                       add_generation_prompt=add_generation_prompt)

    @property
    def chat_template(self) -> str:
        return self._load()[0].chat_template or ""

    @property
    def tokenizer(self):
        return self._load()[0]

    def tail_logprobs(self, head: str, tails: list[list[int]]) -> list[float]:
        """Sum of log-probs of each of `tails` (token ids) right after the text `head` (already
        rendered, tokenized here as vLLM tokenizes a prompt): the head runs once and its KV
        cache serves every tail (a long request, a few short tails: the function names where a
        call begins, trainer/beliefs.py)."""
        import torch

        tok, model = self._load()
        h = tok(head, add_special_tokens=False)["input_ids"]
        out: list[float] = []
        with torch.inference_mode():
            first = model(input_ids=torch.tensor([h]), use_cache=True, logits_to_keep=1)
            cache, nxt = first.past_key_values, torch.log_softmax(first.logits[0, -1].float(), dim=-1)
            for t in tails:
                total = float(nxt[t[0]]) if t else 0.0
                if len(t) > 1:
                    rest = model(input_ids=torch.tensor([t[:-1]]), past_key_values=cache, use_cache=True)
                    logp = torch.log_softmax(rest.logits[0].float(), dim=-1)
                    total += float(logp[torch.arange(len(t) - 1), torch.tensor(t[1:])].sum())
                    cache.crop(-(len(t) - 1))  # back to the head alone for the next tail
                out.append(total)
        return out

    def continuation_logprobs(self, heads: list[str], tails: list[str]) -> list[tuple[float, int]]:
        """(sum of log-probs, tokens) of each `tails[i]` right after the text `heads[i]`,
        both already rendered (no template applied here)."""
        import torch

        tok, model = self._load()
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        out: list[tuple[float, int]] = []
        with torch.inference_mode():
            for i in range(0, len(heads), self.batch_size):
                rows = [(tok(h, add_special_tokens=False)["input_ids"], tok(t, add_special_tokens=False)["input_ids"])
                        for h, t in zip(heads[i : i + self.batch_size], tails[i : i + self.batch_size])]
                width = max(len(h) + len(t) for h, t in rows)
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, (h, t) in enumerate(rows):  # right padding: positions stay those of the text
                    ids[r, : len(h) + len(t)] = torch.tensor(h + t)
                    mask[r, : len(h) + len(t)] = 1
                logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
                for r, (h, t) in enumerate(rows):
                    if not t:
                        out.append((0.0, 0))
                        continue
                    pos = torch.arange(len(h) - 1, len(h) + len(t) - 1)  # the logits that predict each answer token
                    out.append((float(logp[r, pos, torch.tensor(t)].sum()), len(t)))
        return out
