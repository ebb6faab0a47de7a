"""Greedy batched generation with transformers, for evaluation inside a cycle.

The gate compares the current and the candidate model on the same engine, at temperature
0, so a difference in answers is a difference in weights, not in serving stacks. The
production vLLM is left alone: evaluation must not load the server users are on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable


def generate(model_dir: Path, conversations: list[list[dict]], *, max_new_tokens: int = 128,
             batch_size: int = 16, dtype: str = "float32", log: Callable[[str], None] = print) -> list[str]:
    """Greedy answers, in `dtype` (the machine's: feedback.hardware.choose_dtype; greedy
    output differs a little between dtypes, so both models of a comparison use the same)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"  # decoder-only: pad on the left so every row ends at its prompt
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    model.eval()
    out: list[str] = []
    with torch.inference_mode():
        for i in range(0, len(conversations), batch_size):
            batch = conversations[i : i + batch_size]
            texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in batch]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)
            out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            log(f"generate {model_dir.name}: {min(i + batch_size, len(conversations))}/{len(conversations)}")
    return [t.strip() for t in out]


def answer_logprobs(model_dir: Path, conversations: list[list[dict]], answers: list[str], *,
                    batch_size: int = 16, dtype: str = "float32") -> list[tuple[float, int]]:
    """(sum of log-probs, tokens) of each answer after its conversation under the model at
    `model_dir`: how likely this model is to say what another one said (the gate's drift)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    model.eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out: list[tuple[float, int]] = []
    with torch.inference_mode():
        for i in range(0, len(conversations), batch_size):
            rows = []
            for conv, ans in zip(conversations[i : i + batch_size], answers[i : i + batch_size]):
                head = tok(tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True),
                           add_special_tokens=False)["input_ids"]
                tail = tok(ans, add_special_tokens=False)["input_ids"]
                rows.append((head, tail))
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
