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
        import torch

        tok, model = self._load()
        out: list[str] = []
        with torch.inference_mode():
            for _, enc in self._batches(conversations, "generate"):
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id or tok.eos_token_id)
                out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [t.strip() for t in out]

    def sample(self, conversations: list[list[dict]], *, samples: int, temperature: float,
               max_new_tokens: int = 64, seed: int = 0) -> list[list[str]]:
        """`samples` answers per conversation at `temperature`, with common random numbers: the
        generator is reseeded per batch, so two models sampled over the same conversations
        draw the same noise at every step, and where their next-token distributions are close
        they pick the same token. Two near-identical models then give near-identical samples,
        and their paired difference measures the weights, not the dice (the gate's probes)."""
        import torch

        tok, model = self._load()
        out: list[list[str]] = []
        with torch.inference_mode():
            for i, enc in self._batches(conversations, "sample"):
                torch.manual_seed(seed + i)
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                                     top_k=0, top_p=1.0, num_return_sequences=samples,
                                     pad_token_id=tok.pad_token_id or tok.eos_token_id)
                texts = [t.strip() for t in tok.batch_decode(gen[:, enc["input_ids"].shape[1]:],
                                                             skip_special_tokens=True)]
                out += [texts[j : j + samples] for j in range(0, len(texts), samples)]
        return out

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
