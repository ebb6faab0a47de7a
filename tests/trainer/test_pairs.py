from trainer.pairs import ScoredCandidate, build_pairs
from trainer.prompts import Candidate, Prompt


def sc(text, score, strategy="plain"):
    return ScoredCandidate(Candidate(text, strategy), score, {})


def test_best_vs_worst_on_the_bare_prompt():
    p = Prompt("p1", [{"role": "user", "content": "bare"}])
    pairs = build_pairs([p], {"p1": [sc("mid", 0.5), sc("best", 0.9, "scaffold"), sc("worst", 0.1)]}, 0.3, 0.5)
    assert pairs == [{"prompt_id": "p1", "prompt": [{"role": "user", "content": "bare"}], "chosen": "best",
                      "rejected": "worst", "margin": 0.8, "chosen_strategy": "scaffold"}]


def test_no_pair_without_spread_or_without_a_good_answer():
    p = Prompt("p1", [{"role": "user", "content": "x"}])
    assert build_pairs([p], {"p1": [sc("a", 0.6), sc("b", 0.5)]}, 0.3, 0.5) == []      # margin too small
    assert build_pairs([p], {"p1": [sc("a", 0.45), sc("b", 0.0)]}, 0.3, 0.5) == []     # best not good enough
    assert build_pairs([p], {"p1": [sc("a", 0.9), sc("b", None)]}, 0.3, 0.5) == []     # one opinion only
    assert build_pairs([p], {"p1": [sc("same", 0.9), sc("same", 0.1)]}, 0.3, 0.5) == []  # identical texts
    assert build_pairs([p], {"p1": [sc("a", 0.9), sc("  ", 0.0)]}, 0.3, 0.5) == []     # empty answer ignored
