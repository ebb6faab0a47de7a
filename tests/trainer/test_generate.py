"""The evaluation engine's own decoding loop (trainer/generate.py `Engine._decode`), with the
real base model: greedy answers are transformers' own, sampled answers are draws from the
model's softmax, and the same seed gives the same answers whichever rows end first."""
import math

import pytest

from tests.models import require_base_model
from trainer.probes import load_probes


@pytest.fixture(scope="module")
def engine():
    from trainer.generate import Engine

    return Engine(require_base_model(), dtype="float32", batch_size=4, log=lambda _: None)


def convs(n: int) -> list[list[dict]]:
    return [p.messages for p in load_probes()[:n]]


def test_greedy_answers_are_those_of_transformers_generate(engine):
    """Left padding, positions, the KV cache repeated and rows leaving the batch as they end:
    any slip in them changes some answer. Prompts of different lengths in a batch of 4."""
    import torch

    tok, model = engine._load()
    want = []
    with torch.inference_mode():
        for _, enc in engine._batches(convs(8), "reference"):
            gen = model.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
            want += [t.strip() for t in tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
    assert len({len(a) for a in want}) > 1  # answers that end at different steps
    assert engine.generate(convs(8), max_new_tokens=24) == want


def test_a_sampled_first_token_follows_the_softmax(engine):
    """400 one-token answers at temperature 1 to one prompt: the model's likeliest first token
    is drawn as often as its probability says, within a 99.9% binomial interval."""
    import torch

    tok, model = engine._load()
    conv = convs(1)
    with torch.inference_mode():
        enc = tok([tok.apply_chat_template(conv[0], tokenize=False, add_generation_prompt=True)],
                  return_tensors="pt", add_special_tokens=False)
        probs = torch.softmax(model(**enc).logits[0, -1].float(), dim=-1)
    top = int(probs.argmax())
    p, n = float(probs[top]), 400
    assert 0.05 < p < 0.95, p  # a prompt whose first token is uncertain, or the test proves little
    drawn = engine.sample(conv, samples=n, temperature=1.0, max_new_tokens=1, seed=3)[0]
    hits = sum(a == tok.decode([top], skip_special_tokens=True).strip() for a in drawn)
    half = 3.3 * math.sqrt(p * (1 - p) / n)
    assert abs(hits / n - p) < half, (hits / n, p)


def test_the_same_seed_gives_the_same_answers_and_another_seed_others(engine):
    a = engine.sample(convs(6), samples=3, temperature=0.7, max_new_tokens=16, seed=5)
    assert [len(x) for x in a] == [3] * 6
    assert engine.sample(convs(6), samples=3, temperature=0.7, max_new_tokens=16, seed=5) == a
    assert engine.sample(convs(6), samples=3, temperature=0.7, max_new_tokens=16, seed=6) != a
