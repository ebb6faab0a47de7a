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

# Prompts per greedy batch. A decoding step on a CPU costs little more for 64 rows than for 16
# (the weights are read once a step either way): the 220 probes greedily at 32 tokens took
# 96-98 s in batches of 16 and 49-66 s in batches of 64, the same 220 answers (2-core AVX-512
# Xeon without bf16, float32, 2026-12-08; 128 was within that noise).
GREEDY_BATCH = 64
# A sampled batch is as many prompts as fit MAX_ROWS rows (prompts x samples), where it was 16
# prompts whatever the samples (64 rows at the gate's first look of 4 samples): 4 samples of
# the 220 probes took 107-126 s against 129-141 s in batches of 16, the same 880 answers (same
# machine and day as GREEDY_BATCH's figures). The draw and the forward step, not the rows, set
# the pace: about 30 s a sample of the suite either way.
MAX_ROWS = 256
# ...and whose KV cache stays bounded: rows x (longest prompt + new tokens) at most this, about
# 1.5 GB for SmolLM2-135M in float32 (46 KB a token). Long held-out prompts get fewer rows.
MAX_ROW_TOKENS = 32_768


class Engine:
    def __init__(self, model_dir: Path, *, dtype: str = "float32", batch_size: int | None = None,
                 log: Callable[[str], None] = print):
        """`dtype`: the machine's (feedback.hardware.choose_dtype). Output differs a little
        between dtypes, so both models of a comparison use the same one. `batch_size`: at most
        that many prompts a sampled batch (None: as MAX_ROWS and MAX_ROW_TOKENS allow), and
        the log-probs' batch (16 when None)."""
        self.model_dir, self.dtype, self.batch_size, self.log = Path(model_dir), dtype, batch_size, log
        self.greedy_batch = GREEDY_BATCH
        self._loaded = None
        # How a sampled token is drawn: the keyed Gumbel-max (tests/bench/gate_sampling.py
        # compares it with the inverse-CDF draw, `_icdf_pick`, by setting this).
        self.pick: Callable = _gumbel_pick

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

    def _batches(self, conversations: list[list[dict]], what: str, size: int | None, rows_per_prompt: int = 1,
                 max_new_tokens: int = 0):
        """Consecutive conversations, tokenized and left-padded, as many a batch as `size`
        (None: no cap), MAX_ROWS rows and MAX_ROW_TOKENS allow (at least one)."""
        tok, _ = self._load()
        texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
        ids = tok(texts, add_special_tokens=False)["input_ids"] if texts else []
        i = 0
        while i < len(ids):
            j, longest = i + 1, len(ids[i])
            while j < len(ids) and (size is None or j - i < size):
                n, wider = (j + 1 - i) * rows_per_prompt, max(longest, len(ids[j]))
                if n > MAX_ROWS or n * (wider + max_new_tokens) > MAX_ROW_TOKENS:
                    break
                j, longest = j + 1, wider
            # Tokenized once above, padded here (on the left: the tokenizer's padding side).
            yield i, tok.pad({"input_ids": ids[i:j]}, padding=True, return_tensors="pt")
            self.log(f"{what} {self.model_dir.name}: {j}/{len(conversations)}")
            i = j

    def generate(self, conversations: list[list[dict]], *, max_new_tokens: int = 128) -> list[str]:
        """Greedy answers, at most `greedy_batch` prompts a batch (one row each)."""
        out: list[str] = []
        for _, enc in self._batches(conversations, "generate", self.greedy_batch, 1, max_new_tokens):
            out += [a[0] for a in self._decode(enc, repeats=1, max_new_tokens=max_new_tokens)]
        return out

    def sample(self, conversations: list[list[dict]], *, samples: int, temperature: float,
               max_new_tokens: int = 64, seed: int = 0) -> list[list[str]]:
        """`samples` answers per conversation at `temperature`, with common random numbers:
        answer j of conversation i draws its token at each step by Gumbel-max with noise keyed
        by (`seed`, i, j, the step, the token id) alone, whichever rows share its batch or end
        before it (`_gumbel_pick`). Two models sampled over the same conversations add the same
        noise to the same token, so where their next-token distributions are close they pick
        the same token. Two near-identical models then give near-identical samples, and their
        paired difference measures the weights, not the dice (the gate's probes)."""
        out: list[list[str]] = []
        for i, enc in self._batches(conversations, "sample", self.batch_size, max(1, samples), max_new_tokens):
            seeds = [seed * 1_000_003 + i + r for r in range(enc["attention_mask"].shape[0])]
            out += self._decode(enc, repeats=samples, max_new_tokens=max_new_tokens, temperature=temperature,
                                seeds=seeds)
        return out

    def _decode(self, enc, *, repeats: int, max_new_tokens: int, temperature: float = 0.0,
                seeds: list[int] | None = None) -> list[list[str]]:
        """`repeats` answers to each row of `enc` (left-padded prompts): greedy at temperature
        0, else sampled by `pick` (an exact draw from the softmax at `temperature`, no top-k or
        top-p), keyed by `seeds` (one per prompt). Written here rather
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
            # Each answer's key: its prompt's seed and its number among the prompt's answers.
            keys = _mix(torch.tensor(seeds or [0] * (rows // repeats), dtype=torch.int64).repeat_interleave(repeats)
                        * _GOLDEN + torch.arange(repeats, dtype=torch.int64).repeat(rows // repeats))
            for step in range(max_new_tokens):
                if temperature > 0:
                    nxt = self.pick(logits, temperature, keys[live], step)
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
        both already rendered (no template applied here; a head is never empty: its last
        token's logits score the answer's first). Rows are left-padded so that every
        answer ends in the last column, and the model computes logits for the last columns
        only (`logits_to_keep`, the longest answer's tokens): the head's positions never
        reach the 49,152-way output layer. Drift over the 220 probes: 31-33 s -> 29 s on a
        2-core AVX-512 CPU in float32 (the forward pass, not the output layer, is most of it),
        with less memory, within 3e-4 nats of the whole-sequence logits."""
        import torch

        tok, model = self._load()
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        out: list[tuple[float, int]] = []
        with torch.inference_mode():
            size = self.batch_size or 16
            for i in range(0, len(heads), size):
                rows = [(tok(h, add_special_tokens=False)["input_ids"], tok(t, add_special_tokens=False)["input_ids"])
                        for h, t in zip(heads[i : i + size], tails[i : i + size])]
                width, keep = max(len(h) + len(t) for h, t in rows), max(len(t) for _, t in rows)
                if keep == 0:
                    out += [(0.0, 0)] * len(rows)
                    continue
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, (h, t) in enumerate(rows):
                    ids[r, width - len(h) - len(t):] = torch.tensor(h + t)
                    mask[r, width - len(h) - len(t):] = 1
                # Logit column q predicts the token in column width - keep + q: the last keep + 1
                # positions, less the last one (it predicts past the end).
                logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                               logits_to_keep=keep + 1, use_cache=False).logits[:, :-1].float()
                logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
                for r, (_, t) in enumerate(rows):
                    if not t:
                        out.append((0.0, 0))
                        continue
                    cols = torch.arange(keep - len(t), keep)
                    out.append((float(logp[r, cols, torch.tensor(t)].sum()), len(t)))
        return out


# splitmix64's constants, as signed 64-bit integers (torch has no uint64 arithmetic).
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_M1, _M2 = 0xBF58476D1CE4E5B9 - (1 << 64), 0x94D049BB133111EB - (1 << 64)
_TOP = 64  # the tokens each step draws noise for; the rest of the vocabulary is one outcome


def _mix(x):
    """splitmix64's finaliser on an int64 tensor: multiplication wraps, and the right shifts are
    made logical by masking. A counter-based generator: the noise of (answer, step, token) is a
    function of those alone, whichever rows share the batch or ended before."""
    x = x ^ ((x >> 30) & ((1 << 34) - 1))
    x = x * _M1
    x = x ^ ((x >> 27) & ((1 << 37) - 1))
    x = x * _M2
    return x ^ ((x >> 31) & ((1 << 33) - 1))


def _wrap(x: int) -> int:
    """A Python integer as the int64 that wrapping arithmetic would give."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


def _step_key(keys, step: int):
    """Each row's key at `step`: the stream both draws take their noise from."""
    return _mix(keys + _wrap((step + 1) * _GOLDEN))


def _gumbel(h):
    """Gumbel noise from hashed bits, in float64: a uniform of 53 bits (never 0 or 1), so the
    noise spans about [-3.6, 36.7] and a token is out of reach only when its log-prob is some 40
    below the leader's, about e-18 of its odds (23 bits in float32 capped it at 19.5, e-9)."""
    import torch

    u = (((h >> 11) & ((1 << 53) - 1)).to(torch.float64) + 0.5) / (1 << 53)
    return -torch.log(-torch.log(u))


def _gumbel_pick(logits, temperature: float, keys, step: int):
    """One token per row, drawn from the softmax at `temperature` by Gumbel-max with noise
    keyed by (answer, step, token id): two models drawing the same answer add the same noise
    to the same token, so they pick different tokens only where their distributions differ
    enough to move the argmax (common random numbers, the tightest coupling of the two).
    Noise for the whole vocabulary costs a quarter of a step (docs/measurements.md), so each
    row's _TOP likeliest tokens get noise of their own and the rest of the vocabulary competes
    as one outcome with its total mass; when that outcome wins, which is rare, the token is
    drawn within it by the same keyed noise. The rest's noise (id = vocab) is no token's, so the
    second stage's noise is independent of the first's outcome and the two-stage draw is the
    softmax's, up to the noise's 53 bits (`_gumbel`)."""
    import torch

    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    vocab = logp.shape[-1]
    top_lp, top_id = logp.topk(min(_TOP, vocab), dim=-1)
    # The rest's mass summed over its own tokens: no cancellation against the top's sum (1 -
    # sum), and -inf (never drawn) when nothing is left, e.g. a vocabulary of _TOP or fewer.
    rest = logp.exp().scatter_(1, top_id, 0.0).sum(-1, keepdim=True).double().log()
    top_lp = top_lp.double()
    ids = torch.cat([top_id, top_id.new_full((top_id.shape[0], 1), vocab)], dim=1)  # vocab: "the rest"
    at = _step_key(keys, step)[:, None]
    nxt = ids.gather(1, (torch.cat([top_lp, rest], dim=1) + _gumbel(_mix(at + ids * _GOLDEN))).argmax(-1, keepdim=True))
    nxt = nxt.squeeze(1)
    tail = (nxt == vocab).nonzero().squeeze(1)
    if len(tail):
        lp = logp[tail].double().scatter(1, top_id[tail], float("-inf"))
        every = torch.arange(vocab, dtype=torch.int64)[None]
        nxt[tail] = (lp + _gumbel(_mix(at[tail] + every * _GOLDEN))).argmax(-1)
    return nxt


def _icdf_pick(logits, temperature: float, keys, step: int):
    """The inverse-CDF draw (session 18), for comparison: one uniform per answer and step."""
    import torch

    u = (((_step_key(keys, step) >> 41) & ((1 << 23) - 1)).to(torch.float32) + 0.5) / (1 << 23)
    cdf = torch.softmax(logits.float() / temperature, dim=-1).cumsum(-1)
    return torch.searchsorted(cdf, u[:, None] * cdf[:, -1:], right=True).squeeze(1).clamp(max=cdf.shape[-1] - 1)
