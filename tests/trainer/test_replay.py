"""Replay (trainer/replay.py): the shipped set, and rows made of the parent's own answers."""
import re

import pytest

from tests.models import require_base_model
from trainer.probes import load_probes
from trainer.replay import REPLAY_MAX_TOKENS, load_replay, replay_pairs

TEMPLATE = set("what which who how many much is are the a an of in on to do does did have has answer reply with one "
               "word number only briefly short give me tell write python expression that".split())


def content(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower())) - TEMPLATE


def test_the_set_is_general_and_shares_nothing_with_the_probe_suite():
    replay = load_replay()
    assert len(replay) >= 200 and all(m[-1]["role"] == "user" and m[-1]["content"].strip() for m in replay)
    probes = [content(p.messages[-1]["content"]) for p in load_probes()]
    for m in replay:  # the gate must measure what replay did not train on
        r = content(m[-1]["content"])
        assert all(len(r & p) / len(r | p) <= 0.5 for p in probes if r | p), m


@pytest.mark.slow
def test_rows_are_the_parents_own_answers_cached_and_sampled_by_parent(tmp_path):
    base = require_base_model()
    from transformers import AutoTokenizer

    rows = replay_pairs(base, 6, cache_dir=tmp_path, dtype="float32", seed="base", log=lambda m: None)
    # Only answers the parent finished: one cut at the token limit would teach stopping mid-sentence.
    tok = AutoTokenizer.from_pretrained(base)
    assert 1 <= len(rows) <= 6 and all(len(tok(r["chosen"])["input_ids"]) < REPLAY_MAX_TOKENS - 1 for r in rows)
    assert all(r["chosen"] == r["rejected"] and r["chosen"].strip() for r in rows)
    assert all(r["margin"] == 0 and r["chosen_strategy"] == "replay" for r in rows)
    assert len(list(tmp_path.glob("*.json"))) == 1
    again = replay_pairs(base, 6, cache_dir=tmp_path, dtype="float32", seed="base", log=pytest.fail)  # no generation
    assert again == rows
    other = replay_pairs(base, 6, cache_dir=tmp_path, dtype="float32", seed="v7", log=lambda m: None)
    assert [r["prompt"] for r in other] != [r["prompt"] for r in rows]
