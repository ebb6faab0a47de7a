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
