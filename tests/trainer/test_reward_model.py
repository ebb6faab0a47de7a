"""The feedback reward model: examples from every feedback kind, refusal with too little
data, held-out accuracy above the majority baseline on realistic noisy feedback, scores in
[0, 1], and the same model from the same seed."""

import json
import logging
import random

import pytest

from tests.models import require_base_model
from trainer.prompts import Candidate, Prompt
from trainer.reward_model import (FrozenEncoder, _split_by_prompt, balance_tenants, examples_from_prompts,
                                  train_reward_model)


def _prompt(pid: str, served: str | None, *feedback: dict, text: str = "Extract the fields name, city as JSON.") -> Prompt:
    return Prompt(pid, [{"role": "user", "content": text}], "extract_json", list(feedback), served=served)


def _fb(kind: str, value, choice_index: int = 0) -> dict:
    return {"kind": kind, "value": value, "choice_index": choice_index}


def test_examples_from_every_feedback_kind():
    prompts = [
        _prompt("up", "A", _fb("thumbs", "up")),
        _prompt("down", "B", _fb("thumbs", "down")),
        _prompt("r5", "C", _fb("rating", 5)),
        _prompt("r4", "C4", _fb("rating", 4.0)),
        _prompt("r3", "D", _fb("rating", 3)),               # neither good nor bad: no example
        _prompt("r2", "E", _fb("rating", 2)),
        _prompt("r1", "E1", _fb("rating", "1")),            # values come back from Parquet as text
        _prompt("fix", "F", _fb("correction", "F fixed")),  # correction good, served bad
        _prompt("pref0", "G", _fb("preferred", 0)),         # served (choice 0) preferred
        _prompt("pref1", "H", _fb("preferred", 1)),         # choice 1's text is not logged: skip
        _prompt("other", "I", _fb("thumbs", "up", choice_index=2)),  # about another choice: skip
        _prompt("fix2", "J", _fb("correction", "J fixed", choice_index=1)),  # served not judged
        _prompt("comment", "K", _fb("comment", "meh")),
        _prompt("noserved", None, _fb("thumbs", "up")),
        _prompt("latest", "L", _fb("thumbs", "up"), _fb("rating", 1)),  # the later opinion wins
    ]
    got = [(p.prompt_id, text, y) for p, text, y in examples_from_prompts(prompts, lambda p, text: True)]
    assert got == [
        ("up", "A", 1), ("down", "B", 0), ("r5", "C", 1), ("r4", "C4", 1), ("r2", "E", 0), ("r1", "E1", 0),
        ("fix", "F fixed", 1), ("fix", "F", 0), ("pref0", "G", 1), ("fix2", "J fixed", 1), ("latest", "L", 0),
    ]
    # An uncorroborated correction (the default: none is trusted) still says the served answer
    # was bad, but its own text teaches the reward model nothing: one key cannot plant it.
    untrusted = [(p.prompt_id, text, y) for p, text, y in examples_from_prompts(prompts)]
    assert ("fix", "F fixed", 1) not in untrusted and ("fix", "F", 0) in untrusted
    assert ("fix2", "J fixed", 1) not in untrusted


def test_too_few_examples_or_one_label_gives_none_with_a_reason(caplog):
    few = [(_prompt(f"p{i}", "x"), "x", i % 2) for i in range(5)]
    with caplog.at_level(logging.INFO, logger="trainer.reward_model"):
        assert train_reward_model(few, min_examples=20) is None
    assert "fewer than min_examples=20" in caplog.text
    caplog.clear()
    same = [(_prompt(f"p{i}", "x"), "x", 1) for i in range(30)]
    with caplog.at_level(logging.INFO, logger="trainer.reward_model"):
        assert train_reward_model(same) is None
    assert "label 1" in caplog.text
    caplog.clear()
    one_prompt = [(_prompt("only", "x"), f"answer {i}", i % 2) for i in range(30)]
    with caplog.at_level(logging.INFO, logger="trainer.reward_model"):
        assert train_reward_model(one_prompt) is None
    assert "one prompt" in caplog.text


# -- a realistic feedback set -------------------------------------------------------------
_SCHEMAS = [
    ("customer, item and quantity", "{customer} ordered {quantity} {item} for delivery on Friday.",
     {"customer": ["Ann Lee", "Bob Stone", "Cara Diaz", "Dev Patel", "Eve Moss", "Finn Ortiz"],
      "item": ["pens", "mugs", "lamps", "chairs", "cables", "notebooks"], "quantity": ["2", "3", "5", "12", "40"]}),
    ("name, email and city", "Hi, I'm {name}, reach me at {email}. I moved to {city} last spring.",
     {"name": ["Gia Rossi", "Hal Berg", "Ines Kahn", "Jon Wu", "Kim Ivers"],
      "email": ["gia@corp.io", "hal.b@mail.com", "ines@uni.edu", "jw@shop.net", "kim@ivers.org"],
      "city": ["Lyon", "Osaka", "Denver", "Porto", "Leeds"]}),
    ("company, amount and date", "Invoice from {company}: total due {amount}, payable by {date}.",
     {"company": ["Acme Ltd", "Globex", "Initech", "Umbrella Co", "Hooli"],
      "amount": ["$120.50", "$9,800", "$75", "$1,240.00"], "date": ["2024-03-01", "May 5", "June 30", "2025-01-15"]}),
    ("title, author and year", "I just finished {title} by {author}, first published in {year}.",
     {"title": ["Dune", "Emma", "Beloved", "Ubik", "Kindred"],
      "author": ["Frank Herbert", "Jane Austen", "Toni Morrison", "Philip K. Dick", "Octavia Butler"],
      "year": ["1965", "1815", "1987", "1969", "1979"]}),
]
_FAKE = {"customer": "John Smith", "item": "widgets", "quantity": "100", "name": "Jane Doe", "email": "user@example.com",
         "city": "Springfield", "company": "Example Inc", "amount": "$0", "date": "2023-01-01", "title": "Untitled",
         "author": "Unknown", "year": "2000"}


def _good(values: dict, rng: random.Random) -> str:
    obj = json.dumps(values)
    return f"```json\n{obj}\n```" if rng.random() < 0.2 else obj


def _bad(values: dict, rng: random.Random) -> str:
    obj = json.dumps(values)
    kind = rng.randrange(5)
    if kind == 0:  # chatter around the object
        return f"Sure! Here is the extracted information:\n{obj}\nLet me know if you need anything else."
    if kind == 1:  # invented values
        return json.dumps({k: _FAKE[k] for k in values})
    if kind == 2:  # prose, no JSON
        return "The text mentions " + ", ".join(f"the {k} {v}" for k, v in values.items()) + "."
    if kind == 3:  # a key missing and one invented
        keys = list(values)
        return json.dumps({keys[0]: values[keys[0]], keys[1]: _FAKE[keys[1]]})
    return obj[: len(obj) // 2]  # cut off mid-object


def feedback_prompts(n: int = 120, noise: float = 0.1, seed: int = 7) -> list[Prompt]:
    """n extraction prompts, about half served well; each with one piece of feedback of a
    random kind, and the label it expresses flipped for `noise` of them."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        keys_text, template, pools = _SCHEMAS[i % len(_SCHEMAS)]
        values = {k: rng.choice(v) for k, v in pools.items()}
        text = f"Extract the fields {keys_text} as a JSON object. Text: {template.format(**values)}"
        good = rng.random() < 0.5
        served = _good(values, rng) if good else _bad(values, rng)
        said_good = good != (rng.random() < noise)
        kind = rng.choice(["thumbs", "rating", "correction", "preferred", "comment"])
        if kind == "correction" and not said_good:
            fb = [_fb("correction", json.dumps(values))]
        elif kind == "preferred" and said_good:
            fb = [_fb("preferred", 0)]
        elif kind == "rating":
            fb = [_fb("rating", rng.choice([4, 5]) if said_good else rng.choice([1, 2]))]
        elif kind == "comment":
            fb = [_fb("comment", "thanks"), _fb("thumbs", "up" if said_good else "down")]
        else:
            fb = [_fb("thumbs", "up" if said_good else "down")]
        out.append(Prompt(f"c{i:03d}", [{"role": "user", "content": text}], "extract_json", fb, served=served))
    return out


def _rated(tenant: str, n: int, value: str = "down") -> list[Prompt]:
    return [_prompt(f"{tenant}-{i}", f"answer {i}", {**_fb("thumbs", value), "tenant": tenant}) for i in range(n)]


def test_one_tenant_alone_trains_no_reward_model():
    ex = examples_from_prompts(_rated("mallory", 60))
    kept, report = balance_tenants(ex, cap=0.5, min_tenants=2)
    assert kept == [] and report["tenants"] == 1 and report["dropped"] == 60 and "one key's word" in report["reason"]
    kept, _ = balance_tenants(ex, cap=0.5, min_tenants=1)  # a single-tenant deployment opts out
    assert len(kept) == 60


def test_no_tenant_keeps_more_than_the_cap_of_the_reward_models_examples():
    ex = examples_from_prompts(_rated("mallory", 60) + _rated("alice", 10, "up") + _rated("bob", 8, "up"))
    kept, report = balance_tenants(ex, cap=0.5, min_tenants=2)
    share = sum(p.prompt_id.startswith("mallory") for p, _, _ in kept) / len(kept)
    assert share <= 0.5 and len(kept) == 36 and report == {"tenants": 3, "dropped": 42}
    # The kept examples keep their order, and the others' are all kept.
    assert [p.prompt_id for p, _, _ in kept if not p.prompt_id.startswith("mallory")] == \
        [f"alice-{i}" for i in range(10)] + [f"bob-{i}" for i in range(8)]
    assert balance_tenants(ex, cap=1.0, min_tenants=2)[0] == ex


@pytest.fixture(scope="module")
def examples():
    # Each correction here is the right extraction: taken as corroborated (several tenants).
    ex = examples_from_prompts(feedback_prompts(), lambda p, text: True)
    assert len(ex) >= 120
    return ex


@pytest.fixture(scope="module")
def encoder():
    return FrozenEncoder(require_base_model())  # one per module: it caches every vector it computes


def _check_model(rm, examples):
    r = rm.report()
    assert r["n_train"] + r["n_heldout"] == len(examples) and r["n_heldout"] >= 0.2 * len(examples)
    assert rm.heldout_accuracy == r["heldout_accuracy"] and rm.baseline_accuracy == r["baseline_accuracy"]
    assert r["baseline_accuracy"] >= 0.4  # the set is not lopsided: beating it means something
    assert rm.heldout_accuracy >= rm.baseline_accuracy + 0.2, r
    assert rm.heldout_accuracy >= 0.75, r
    assert r["seconds"] >= 0


def test_hand_features_alone_beat_the_majority_baseline(examples):
    rm = train_reward_model(examples, seed=0)
    assert rm is not None
    _check_model(rm, examples)
    assert rm.report()["encoder"] is None


def test_with_a_frozen_encoder_beats_the_baseline_and_ranks_unseen_answers(examples, encoder):
    rm = train_reward_model(examples, seed=0, encoder=encoder)
    assert rm is not None
    _check_model(rm, examples)
    assert rm.report()["features"] > 7

    # A prompt none of the training prompts had, with one answer of each kind.
    text = ("Extract the fields customer, item and quantity as a JSON object. "
            "Text: Zoe Park ordered 7 kettles for delivery on Friday.")
    prompt = Prompt("new", [{"role": "user", "content": text}])
    values = {"customer": "Zoe Park", "item": "kettles", "quantity": "7"}
    good = Candidate(json.dumps(values), "plain")
    chatty = Candidate(f"Sure! Here you go: {json.dumps(values)} Anything else?", "plain")
    invented = Candidate(json.dumps({k: _FAKE[k] for k in values}), "plain")
    scores = rm(prompt, [good, chatty, invented])
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    assert scores[0] > 0.5 > max(scores[1:]), scores
    assert rm(prompt, []) == []


def test_same_seed_same_model_other_seed_other_split(examples):
    a, b = train_reward_model(examples, seed=3), train_reward_model(examples, seed=3)
    ra, rb = a.report(), b.report()
    ra.pop("seconds"), rb.pop("seconds")
    assert ra == rb
    assert (a.weights == b.weights).all()
    prompt = examples[0][0]
    cands = [Candidate(t, "plain") for _, t, _ in examples[:6]]
    assert a(prompt, cands) == b(prompt, cands)
    c = train_reward_model(examples, seed=4)
    assert (c.weights != a.weights).any()


def test_split_keeps_each_prompt_on_one_side(examples):
    train, held = _split_by_prompt(examples, 0.25, seed=1)
    assert {p.prompt_id for p, _, _ in train}.isdisjoint({p.prompt_id for p, _, _ in held})
    assert len(train) + len(held) == len(examples)
    # corrections give two examples on one prompt: both must land on the same side
    assert any(sum(p.prompt_id == q.prompt_id for q, _, _ in held) == 2 for p, _, _ in held)
