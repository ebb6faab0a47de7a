"""A reward model trained each cycle on what users said about served answers.

Feedback is sparse and noisy, so the model is small: a handful of hand-made features
(length, JSON parses, words outside the JSON, overlap with the prompt, JSON values found in
the prompt) plus, when given a `FrozenEncoder`, the mean hidden state of a small causal LM
over the answer tokens (read with the prompt before them), reduced by PCA, all into an
L2-regularised logistic regression fitted with Newton steps in numpy. Training takes
seconds on a 2-core CPU.

Honesty: examples are split into train and held-out *by prompt* (a correction and the
served answer it replaces never sit on both sides), the held-out accuracy is that of the
very model returned (it is not refitted on everything afterwards), and it is reported next
to the majority-class baseline so a model that learned nothing shows it.

    examples = examples_from_prompts(selection.train)
    rm = train_reward_model(examples, encoder=FrozenEncoder(settings.base_model))
    if rm is not None: rm.report()  # {"heldout_accuracy": ..., "baseline_accuracy": ..., ...}
    rm(prompt, candidates)          # P(good) per candidate: a reward source
"""
from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from trainer.prompts import Candidate, Prompt
from trainer.rewards import extract_json_object
from trainer.selection import tenant_quota  # the training side's rule, here on examples

log = logging.getLogger(__name__)

Example = tuple[Prompt, str, int]  # (prompt, answer, 1 = good / 0 = bad)

L2 = 1.0            # ridge on standardised features; 1.0 is sklearn's C=1
PCA_DIMS = 8        # encoder directions kept: a few hundred noisy labels cannot fit 576 weights
PROMPT_TOKENS, ANSWER_TOKENS = 384, 128


# -- training data from feedback ---------------------------------------------------------
def examples_from_prompts(prompts: list[Prompt],
                          trusted: Callable[[Prompt, str], bool] = lambda p, text: False) -> list[Example]:
    """(prompt, answer, label) from each prompt's feedback. Thumbs up/down -> 1/0; rating >= 4
    -> 1, <= 2 -> 0, 3 says nothing; a correction makes the served one bad, and is a good
    answer itself only when `trusted` (corroborated: trainer/rewards/feedback.py), or one key
    could teach the reward model its planted text; preferring choice 0 makes the served answer
    good. Only choice 0's text is logged, so feedback about another choice teaches nothing
    (skipped); comments have no label. When feedback on one answer disagrees, the latest wins
    (feedback comes oldest first)."""
    out: list[Example] = []
    for p in prompts:
        labels: dict[str, int] = {}  # answer text -> label; dict order = first seen
        for fb in p.feedback:
            kind, value, idx = fb.get("kind"), fb.get("value"), fb.get("choice_index") or 0
            if kind == "correction" and isinstance(value, str) and value.strip():
                if trusted(p, value):
                    labels[value] = 1
                if idx == 0 and p.served and p.served != value:
                    labels[p.served] = 0
                continue
            if not p.served:
                continue
            label = None
            if kind == "thumbs" and idx == 0:
                label = {"up": 1, "down": 0}.get(value)
            elif kind == "rating" and idx == 0:
                r = _number(value)
                label = None if r is None or 2 < r < 4 else int(r >= 4)
            elif kind == "preferred" and _number(value) == 0:
                label = 1
            if label is not None:
                labels[p.served] = label
        out.extend((p, text, y) for text, y in labels.items())
    return out


def tenant_of(p: Prompt) -> str:
    """Whose feedback labels this prompt's examples: a key rates only its own completions, so
    it is the tenant most of the prompt's feedback came from."""
    tenants = Counter(fb.get("tenant") or "anonymous" for fb in p.feedback)
    return tenants.most_common(1)[0][0] if tenants else "anonymous"


def balance_tenants(examples: list[Example], *, cap: float, min_tenants: int) -> tuple[list[Example], dict]:
    """One key's thumbs are not the reward model's truth. With fewer than `min_tenants` tenants
    behind the examples there is no reward model at all (`[]`); otherwise no tenant keeps more
    than `cap` of what is kept (cap 0.5: no more than all the others together), each keeping
    its first examples. Returns the examples kept and a report (how many tenants, how many
    examples dropped, and why when all were)."""
    by: dict[str, list[Example]] = {}
    for ex in examples:
        by.setdefault(tenant_of(ex[0]), []).append(ex)
    report = {"tenants": len(by), "dropped": 0}
    if len(by) < min_tenants:
        report.update(dropped=len(examples), reason=f"feedback from {len(by)} tenant(s), fewer than "
                      f"TAO_REWARD_MODEL_MIN_TENANTS={min_tenants}: one key's word trains nothing")
        return [], report
    if cap < 1:
        quota = tenant_quota([len(v) for v in by.values()], cap)
        by = {t: v[:quota] for t, v in by.items()}
    keep = {id(ex) for v in by.values() for ex in v}
    kept = [ex for ex in examples if id(ex) in keep]
    report["dropped"] = len(examples) - len(kept)
    return kept, report


def _number(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# -- features ---------------------------------------------------------------------------
_WORD_RE = re.compile(r"\w+")
HAND_FEATURES = ["log_chars", "bare_json", "has_object", "log_words_outside_object",
                 "answer_words_in_prompt", "json_values_in_prompt", "prompt_words_in_answer"]


def hand_features(prompt_text: str, answer: str) -> list[float]:
    """Cheap features of one answer to one prompt, in the order of HAND_FEATURES."""
    a = answer.strip()
    try:
        json.loads(a)
        bare = 1.0
    except ValueError:
        bare = 0.0
    obj, rest = extract_json_object(a)
    p_words, a_words = set(_WORD_RE.findall(prompt_text.lower())), _WORD_RE.findall(a.lower())
    src = prompt_text.lower()
    values = [str(v).strip().lower() for v in (obj or {}).values() if v is not None and str(v).strip()]
    return [
        math.log1p(len(a)),
        bare,
        float(obj is not None),
        math.log1p(len(_WORD_RE.findall(rest))) if obj is not None else math.log1p(len(a_words)),
        sum(w in p_words for w in a_words) / len(a_words) if a_words else 0.0,
        sum(v in src for v in values) / len(values) if values else 0.0,
        len(p_words & set(a_words)) / len(p_words) if p_words else 0.0,
    ]


class FrozenEncoder:
    """Mean hidden state of the first `layers` layers of a causal LM over the answer's
    tokens, with the prompt's text before them, so the vector is about the answer *to this
    prompt*. Only the first layers: they carry most of what a linear head can use (syntax,
    copying from the prompt) at a fraction of the cost, which matters on a 2-core CPU.
    Loaded on first use; vectors are cached by (prompt, answer) for the life of the object."""

    def __init__(self, model_dir: Path | str, layers: int = 6, batch_size: int = 16):
        self.model_dir, self.layers, self.batch_size = str(model_dir), layers, batch_size
        self._tok = self._model = None
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(self.model_dir)
        # float32: bf16 matmuls are slow on most CPUs and the features must not be noisy.
        model = AutoModel.from_pretrained(self.model_dir, dtype="float32").eval()
        model.layers = model.layers[: self.layers]
        model.config.num_hidden_layers = len(model.layers)
        self._model = model

    def encode(self, prompts: list[Prompt], answers: list[str]) -> np.ndarray:
        keys = [(p.text, a) for p, a in zip(prompts, answers)]
        todo = sorted({k for k in keys if k not in self._cache}, key=lambda k: len(k[0]) + len(k[1]))
        if todo:  # sorted by length, so a batch pads little
            if self._model is None:
                self._load()
            for i in range(0, len(todo), self.batch_size):
                batch = todo[i : i + self.batch_size]
                for k, vec in zip(batch, self._forward(batch)):
                    self._cache[k] = vec
        return np.stack([self._cache[k] for k in keys])

    def _forward(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        import torch

        seqs = []
        for prompt_text, answer in pairs:
            pre = self._tok(prompt_text + "\n\n", add_special_tokens=False)["input_ids"][-PROMPT_TOKENS:]
            ans = self._tok(answer, add_special_tokens=False)["input_ids"][:ANSWER_TOKENS]
            seqs.append((pre, ans))
        width = max(len(pre) + len(ans) for pre, ans in seqs)
        ids = torch.full((len(seqs), width), self._tok.pad_token_id or 0, dtype=torch.long)
        attn = torch.zeros((len(seqs), width), dtype=torch.long)
        pool = torch.zeros((len(seqs), width), dtype=torch.float32)
        for i, (pre, ans) in enumerate(seqs):
            ids[i, : len(pre) + len(ans)] = torch.tensor(pre + ans)
            attn[i, : len(pre) + len(ans)] = 1
            # An empty answer: the state right before it, where it would have started.
            pool[i, len(pre) - (not ans) : len(pre) + len(ans)] = 1
        with torch.inference_mode():
            hidden = self._model(input_ids=ids, attention_mask=attn).last_hidden_state
        vec = (hidden * pool[..., None]).sum(1) / pool.sum(1, keepdim=True)
        return vec.numpy().astype(np.float64)


# -- the model ----------------------------------------------------------------------------
class RewardModel:
    """P(a user would call this answer good), as a reward source."""

    def __init__(self, encoder: FrozenEncoder | None, pca: tuple[np.ndarray, np.ndarray] | None,
                 mean: np.ndarray, std: np.ndarray, weights: np.ndarray):
        self.encoder, self.pca, self.mean, self.std, self.weights = encoder, pca, mean, std, weights
        # Set by train_reward_model once measured on the held-out prompts.
        self.heldout_accuracy = self.baseline_accuracy = float("nan")
        self.n_train = self.n_heldout = 0
        self.stats: dict = {}

    def report(self) -> dict:
        return dict(self.stats)

    def predict(self, prompts: list[Prompt], answers: list[str]) -> np.ndarray:
        x = _features(prompts, answers, self.encoder, self.pca)
        return _sigmoid(_design((x - self.mean) / self.std) @ self.weights)

    def __call__(self, prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
        if not candidates:
            return []
        return [float(s) for s in self.predict([prompt] * len(candidates), [c.text for c in candidates])]


def train_reward_model(examples: list[Example], *, heldout_fraction: float = 0.25, seed: int = 0,
                       min_examples: int = 20, encoder: FrozenEncoder | None = None) -> RewardModel | None:
    """Fit on a seeded by-prompt split of `examples`, measure on the rest. None (with the
    reason logged) when there is too little to learn from or to measure with."""
    t0 = time.monotonic()
    labels = Counter(y for _, _, y in examples)
    why = None
    if len(examples) < min_examples:
        why = f"{len(examples)} feedback examples, fewer than min_examples={min_examples}"
    elif len(labels) < 2:
        why = f"all {len(examples)} feedback examples have label {next(iter(labels))}: nothing to tell apart"
    if why is None:
        train, held = _split_by_prompt(examples, heldout_fraction, seed)
        if not held or not train:
            why = "all feedback is on one prompt: no held-out prompt to measure on"
        elif len({y for _, _, y in train}) < 2:
            why = "the training side of the split has one label only"
    if why is not None:
        log.info("no reward model this cycle: %s", why)
        return None

    prompts, answers, y = _unzip(train)
    pca = None
    if encoder is not None:
        emb = encoder.encode(prompts, answers)
        center = emb.mean(0)
        _, _, vt = np.linalg.svd(emb - center, full_matrices=False)
        pca = (center, vt[: min(PCA_DIMS, len(train) - 1)])
    x = _features(prompts, answers, encoder, pca)
    mean, std = x.mean(0), x.std(0)
    std[std < 1e-9] = 1.0  # a constant feature: leave it at zero
    weights = _fit_logistic(_design((x - mean) / std), y)

    model = RewardModel(encoder, pca, mean, std, weights)
    hp, ha, hy = _unzip(held)
    acc = float(np.mean((model.predict(hp, ha) >= 0.5) == hy))
    majority = int(y.mean() >= 0.5)  # what a model that learned nothing would say, from train
    model.stats = {
        "heldout_accuracy": round(acc, 4),
        "baseline_accuracy": round(float(np.mean(hy == majority)), 4),
        "n_examples": len(examples), "n_train": len(train), "n_heldout": len(held),
        "train_prompts": len({p.prompt_id for p in prompts}), "heldout_prompts": len({p.prompt_id for p in hp}),
        "positive_share": round(labels[1] / len(examples), 4),
        "features": len(HAND_FEATURES) + (len(pca[1]) if pca is not None else 0),
        "encoder": encoder.model_dir if encoder is not None else None,
        "seconds": round(time.monotonic() - t0, 2),
    }
    model.heldout_accuracy, model.baseline_accuracy = model.stats["heldout_accuracy"], model.stats["baseline_accuracy"]
    model.n_train, model.n_heldout = len(train), len(held)
    log.info("reward model: held-out accuracy %.3f vs majority baseline %.3f (%d train, %d held out, %.1fs)",
             acc, model.baseline_accuracy, len(train), len(held), model.stats["seconds"])
    return model


def _split_by_prompt(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Whole prompts go to the held-out side, in a seeded order, until it has `fraction` of
    the examples."""
    ids = sorted({p.prompt_id for p, _, _ in examples})
    order = np.random.default_rng(seed).permutation(len(ids))
    size = Counter(p.prompt_id for p, _, _ in examples)
    held_ids: set[str] = set()
    n_held = 0
    for i in order:
        if n_held >= fraction * len(examples):
            break
        held_ids.add(ids[i])
        n_held += size[ids[i]]
    if len(held_ids) == len(ids):  # keep at least one prompt to train on
        held_ids.discard(ids[order[-1]])
    return ([e for e in examples if e[0].prompt_id not in held_ids],
            [e for e in examples if e[0].prompt_id in held_ids])


def _unzip(examples: list[Example]) -> tuple[list[Prompt], list[str], np.ndarray]:
    return [p for p, _, _ in examples], [a for _, a, _ in examples], np.array([y for _, _, y in examples], float)


def _features(prompts: list[Prompt], answers: list[str], encoder: FrozenEncoder | None,
              pca: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    x = np.array([hand_features(p.text, a) for p, a in zip(prompts, answers)], dtype=np.float64)
    if encoder is not None and pca is not None:
        center, components = pca
        x = np.hstack([x, (encoder.encode(prompts, answers) - center) @ components.T])
    return x


def _design(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1))])  # last column: the bias


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def _fit_logistic(x: np.ndarray, y: np.ndarray, iters: int = 50) -> np.ndarray:
    """Newton's method on sum(log loss) + L2/2 * |w|^2, bias not penalised. Convex with a
    ridge, so it converges in a few steps and the answer does not depend on a start point."""
    w = np.zeros(x.shape[1])
    ridge = np.full(x.shape[1], L2)
    ridge[-1] = 1e-6
    for _ in range(iters):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - y) + ridge * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(ridge)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w
