"""The evaluation engine's own decoding loop (trainer/generate.py `Engine._decode`), with the
real base model: greedy answers are transformers' own, sampled answers are draws from the
model's softmax, and the same seed gives the same answers whichever rows end first."""
import math
import random

import pytest

from tests.models import require_base_model
from trainer.probes import load_probes


@pytest.fixture(scope="module")
def engine():
    from trainer.generate import Engine

    e = Engine(require_base_model(), dtype="float32", batch_size=4, log=lambda _: None)
    e.greedy_batch = 4  # batches of 4 greedy too: several batches, rows ending at different steps
    return e


def convs(n: int) -> list[list[dict]]:
    return [p.messages for p in load_probes()[:n]]


def test_greedy_answers_are_those_of_transformers_generate(engine):
    """Left padding, positions, the KV cache repeated and rows leaving the batch as they end:
    any slip in them changes some answer. Prompts of different lengths in a batch of 4."""
    import torch

    tok, model = engine._load()
    want, ended = [], []
    with torch.inference_mode():
        for _, enc in engine._batches(convs(8), "reference", 4):
            gen = model.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
            new = gen[:, enc["input_ids"].shape[1]:]
            want += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
            ended += [bool((row[:-1] == tok.eos_token_id).any()) for row in new]
    # Some rows end before the last step and some do not: rows leave the batch mid-way.
    assert any(ended) and not all(ended), ended
    assert engine.generate(convs(8), max_new_tokens=24) == want


@pytest.mark.parametrize("temperature", [1.0, 1.5])
def test_a_sampled_first_token_follows_the_softmax(engine, temperature):
    """400 one-token answers to one prompt: the model's likeliest first word is drawn as often
    as the softmax at that temperature says (summed over every token that reads the same once
    stripped), within a 99.9% binomial interval."""
    import torch

    tok, model = engine._load()
    conv = convs(1)
    with torch.inference_mode():
        enc = tok([tok.apply_chat_template(conv[0], tokenize=False, add_generation_prompt=True)],
                  return_tensors="pt", add_special_tokens=False)
        probs = torch.softmax(model(**enc).logits[0, -1].float() / temperature, dim=-1)
    word = tok.decode([int(probs.argmax())], skip_special_tokens=True).strip()
    same = [i for i, t in enumerate(tok.batch_decode([[i] for i in range(len(probs))], skip_special_tokens=True))
            if t.strip() == word]
    p, n = float(probs[same].sum()), 400
    assert 0.05 < p < 0.95, p  # a prompt whose first token is uncertain, or the test proves little
    drawn = engine.sample(conv, samples=n, temperature=temperature, max_new_tokens=1, seed=3)[0]
    hits = sum(a == word for a in drawn)
    half = 3.3 * math.sqrt(p * (1 - p) / n)
    assert abs(hits / n - p) < half, (hits / n, p)


def test_the_same_seed_gives_the_same_answers_and_another_seed_others(engine):
    a = engine.sample(convs(6), samples=3, temperature=0.7, max_new_tokens=16, seed=5)
    assert [len(x) for x in a] == [3] * 6
    assert engine.sample(convs(6), samples=3, temperature=0.7, max_new_tokens=16, seed=5) == a
    assert engine.sample(convs(6), samples=3, temperature=0.7, max_new_tokens=16, seed=6) != a


def test_a_conversations_samples_do_not_depend_on_the_rows_beside_it(engine):
    """Each answer's noise is keyed by its prompt, its number and the step, not by its place in
    the batch: the first conversation's samples are the same alone and with others in its
    batch, whichever rows end first (common random numbers)."""
    alone = engine.sample(convs(1), samples=4, temperature=0.7, max_new_tokens=16, seed=9)
    assert engine.sample(convs(3), samples=4, temperature=0.7, max_new_tokens=16, seed=9)[0] == alone[0]


def test_samples_do_not_depend_on_the_batch_size_but_on_the_conversations_place(engine):
    """Keys come from the conversation's place in the whole list and the sample's number, not
    from the row in a batch: batches of 1 and of 4 give the same answers (some ending early),
    and the same conversation twice, at two places, gets answers of its own at each."""
    from trainer.generate import Engine

    one = Engine(engine.model_dir, dtype="float32", batch_size=1, log=lambda _: None)
    one._loaded = engine._load()  # the same weights, not loaded twice
    four = engine.sample(convs(6), samples=3, temperature=0.7, max_new_tokens=24, seed=4)
    assert one.sample(convs(6), samples=3, temperature=0.7, max_new_tokens=24, seed=4) == four
    tok = engine.tokenizer
    lengths = [len(tok(a, add_special_tokens=False)["input_ids"]) for row in four for a in row]
    assert min(lengths) < 20 <= max(lengths), lengths  # rows ended at different steps
    twice = engine.sample(convs(1) * 2, samples=4, temperature=0.7, max_new_tokens=16, seed=4)
    assert twice[0] != twice[1]


def test_the_shared_prefill_repeated_gives_each_greedy_answer_every_time(engine):
    """The prompt's KV cache repeated for each sample: at temperature 0 every copy answers as
    the prompt alone does."""
    greedy = engine.generate(convs(8), max_new_tokens=24)
    got = []
    for _, enc in engine._batches(convs(8), "repeat", 4):
        got += engine._decode(enc, repeats=3, max_new_tokens=24)
    assert got == [[a] * 3 for a in greedy]


def test_log_probs_in_a_batch_are_those_of_each_answer_alone(engine):
    """Rows of different lengths, left-padded, logits for the answers' columns only: each sum
    equals the answer scored alone (no padding), token by token from the full logits."""
    import torch

    tok, model = engine._load()
    conversations = convs(6)
    answers = ["Paris.", "", "The answer is 42, as everyone knows.", "No", "x = [i * i for i in range(10)]", "Oui"]
    got = engine.logprobs(conversations, answers)
    for conv, answer, (lp, n) in zip(conversations, answers, got):
        head = tok(tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True),
                   add_special_tokens=False)["input_ids"]
        tail = tok(answer, add_special_tokens=False)["input_ids"]
        assert n == len(tail)
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=torch.tensor([head + tail])).logits[0].float(), dim=-1)
        want = sum(float(logp[len(head) - 1 + j, t]) for j, t in enumerate(tail))
        assert lp == pytest.approx(want, abs=2e-3), answer
    assert got[1] == (0.0, 0) and len({round(lp, 2) for lp, _ in got}) == 6
    assert engine.logprobs(conversations[:2], ["", ""]) == [(0.0, 0)] * 2  # a batch with nothing to score


def test_batches_keep_to_the_row_and_kv_budgets_and_cover_every_prompt_in_order(engine, monkeypatch):
    import trainer.generate as g

    monkeypatch.setattr(g, "MAX_ROWS", 12)
    monkeypatch.setattr(g, "MAX_ROW_TOKENS", 12 * 60)
    long_one = [{"role": "user", "content": "Summarize: " + "the cat sat on the mat. " * 40}]
    conversations = convs(10) + [long_one] + convs(20)[10:]
    starts, sizes = [], []
    for i, enc in engine._batches(conversations, "plan", None, rows_per_prompt=3, max_new_tokens=8):
        rows, width = enc["input_ids"].shape[0] * 3, enc["input_ids"].shape[1]
        assert rows <= 12 and (rows * (width + 8) <= 12 * 60 or enc["input_ids"].shape[0] == 1)
        starts.append(i)
        sizes.append(enc["input_ids"].shape[0])
    assert starts == [sum(sizes[:k]) for k in range(len(sizes))] and sum(sizes) == len(conversations)
    assert sizes[starts.index(10)] == 1  # the long prompt (over the budget alone) goes alone
    assert max(sizes) == 4  # short ones fill the rows


def test_no_new_tokens_gives_empty_answers(engine):
    assert engine.sample(convs(2), samples=3, temperature=0.7, max_new_tokens=0) == [["", "", ""]] * 2


def splitmix64_finaliser(x: int) -> int:
    """The reference, in Python's unbounded integers (Vigna's splitmix64)."""
    m = (1 << 64) - 1
    x &= m
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & m
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def test_the_keyed_noise_is_splitmix64_in_signed_arithmetic():
    import torch

    from trainer.generate import _mix

    rnd = random.Random(0)
    xs = [0, 1, 12345, (1 << 62) + 7, -5, -(1 << 63)] + [rnd.randrange(-(1 << 63), 1 << 63) for _ in range(5000)]
    got = _mix(torch.tensor(xs, dtype=torch.int64)).tolist()  # thousands: the vectorised kernel too
    assert [g & ((1 << 64) - 1) for g in got] == [splitmix64_finaliser(x) for x in xs]


def synthetic(vocab: int, seed: int, scale: float):
    import torch

    return torch.randn(vocab, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_the_two_stage_gumbel_draw_follows_the_softmax(scale):
    """A flat distribution (most of the mass outside the tokens given noise of their own, so the
    second stage draws most tokens) and a peaked one: 20,000 draws with distinct keys land on
    each token as often as the softmax says, within a 99.9% interval per token."""
    import torch

    from trainer.generate import _TOP, _gumbel_pick

    vocab, n = 300, 20_000
    logits = synthetic(vocab, 1, scale)
    p = torch.softmax(logits / 0.7, -1)
    outside = float(p.sort(descending=True).values[_TOP:].sum())
    assert (outside > 0.5) if scale < 1 else (outside < 0.2), outside  # the case the test is about
    picks = _gumbel_pick(logits.expand(n, vocab), 0.7, torch.arange(n, dtype=torch.int64) * 7919, 3)
    counts = torch.bincount(picks, minlength=vocab).float()
    assert int(counts.sum()) == n and len(counts) == vocab  # never "the rest" itself (id vocab)
    half = 3.3 * (p * (1 - p) / n).sqrt() + 1.0 / n
    assert ((counts / n - p).abs() < half).all(), float(((counts / n - p).abs() / half).max())


def test_two_close_distributions_pick_the_same_token_as_often_as_gumbel_max_promises():
    """Common random numbers: with the same keys, two distributions at total variation d agree
    in at least (1 - d) / (1 + d) of the draws (the Gumbel-max coupling's bound); noise drawn
    independently for each would agree in sum p q only, far less here."""
    import torch

    from trainer.generate import _gumbel_pick

    vocab, n = 300, 20_000
    a = synthetic(vocab, 2, 3.0)
    b = a + synthetic(vocab, 3, 0.3)
    p, q = torch.softmax(a / 0.7, -1), torch.softmax(b / 0.7, -1)
    d = float((p - q).abs().sum() / 2)
    keys = torch.arange(n, dtype=torch.int64) * 104729
    same = float((_gumbel_pick(a.expand(n, vocab), 0.7, keys, 5) == _gumbel_pick(b.expand(n, vocab), 0.7, keys, 5))
                 .float().mean())
    assert 0.05 < d < 0.5 and float((p * q).sum()) < 0.5, d
    assert same >= (1 - d) / (1 + d) - 0.01, (same, d)
    # Another step's noise is another draw: the same keys one step later agree with step 5 far less.
    later = _gumbel_pick(a.expand(n, vocab), 0.7, keys, 6)
    assert float((later == _gumbel_pick(a.expand(n, vocab), 0.7, keys, 5)).float().mean()) < same - 0.2
