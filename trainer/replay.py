"""Replay: general prompts (trainer/replay.jsonl, none shared with the gate's probe suite or
the benchmark) answered by the parent itself, mixed into each training run so that learning
the traffic's tasks does not wear away what the model could already do.

On-policy and label-free: the answers are the parent's own greedy ones ("Retaining by doing",
2025: the model's own outputs are what prevents forgetting). Each becomes a row whose chosen
and rejected answers are the same text: DPO's preference term is exactly zero on it (both
sides have the same log-ratio), so only the NLL term of `dpo_nll` (or SFT) acts, pulling the
model toward what its parent said. Plain `dpo` has no such term: replay does nothing there.
"""
from __future__ import annotations

import json
import random
from importlib.resources import files
from pathlib import Path
from typing import Callable

from trainer.pairs import Pair

# Rows stay short (training cost), and a rejected side (cut at optimize.REJECTED_TOKENS = 64)
# is never cut shorter than its chosen twin, which would make DPO's term non-zero.
REPLAY_MAX_TOKENS = 64


def load_replay() -> list[list[dict]]:
    text = files("trainer").joinpath("replay.jsonl").read_text()
    return [json.loads(line)["messages"] for line in text.splitlines() if line.strip()]


def replay_pairs(parent_dir: Path, n: int, *, cache_dir: Path, dtype: str, seed: str,
                 log: Callable[[str], None] = print) -> list[Pair]:
    """`n` replay rows with the parent's own answers: a sample of the set seeded by `seed` (the
    parent's name: a parent that trains again reuses its cached answers, a new one gets
    another sample), generated only for the sample."""
    from trainer.gate import AnswerCache

    everything = load_replay()
    picked = random.Random(seed).sample(everything, min(n, len(everything)))
    answers = AnswerCache(cache_dir, picked, REPLAY_MAX_TOKENS, dtype, log).greedy(parent_dir)
    # An answer cut at the token limit would teach the model to stop mid-sentence (the chat
    # template closes the turn after it): only answers the parent finished are replayed.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(parent_dir)
    finished = [(c, a) for c, a in zip(picked, answers)
                if a.strip() and len(tok(a, add_special_tokens=False)["input_ids"]) < REPLAY_MAX_TOKENS - 1]
    return [Pair(prompt_id=f"replay-{i}", prompt=c, chosen=a, rejected=a, margin=0.0, chosen_strategy="replay")
            for i, (c, a) in enumerate(finished)]
