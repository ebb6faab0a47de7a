"""Intervals of trainer/stats.py: they cover what they should, on data with a known answer."""
import random

from hypothesis import given, settings, strategies as st

from trainer.stats import paired_bootstrap, wilson


def test_wilson_matches_known_values_and_edges():
    w = wilson(8, 10)
    assert (round(w.low, 3), round(w.high, 3)) == (0.490, 0.943)  # the textbook 95% Wilson interval
    assert wilson(0, 0).value is None and wilson(0, 0).n == 0
    assert abs(wilson(0, 5).low) < 1e-9 and abs(wilson(5, 5).high - 1) < 1e-9


def test_paired_bootstrap_is_seeded_and_centred():
    diffs = [1] * 10 + [-1] * 10 + [0] * 180
    a, b = paired_bootstrap(diffs, seed=3), paired_bootstrap(diffs, seed=3)
    assert a == b and a.value == 0 and a.low < 0 < a.high and a.n == 200
    assert paired_bootstrap([]).value is None
    assert paired_bootstrap([0] * 50).as_dict() == {"value": 0.0, "low": 0.0, "high": 0.0, "n": 50, "confidence": 0.95}


@settings(max_examples=20, deadline=None)
@given(st.floats(0.05, 0.95), st.integers(0, 10_000))
def test_wilson_covers_the_true_rate_about_as_often_as_it_says(p, seed):
    rng = random.Random(seed)
    covered = sum(w.low <= p <= w.high for w in (wilson(sum(rng.random() < p for _ in range(60)), 60)
                                                   for _ in range(200)))
    assert covered >= 200 * 0.88  # 95% nominal; binomial noise of 200 trials stays well above 88%


def test_difference_of_two_rates_newcombe():
    from trainer.stats import difference

    d = difference(56, 70, 48, 80)  # Newcombe (1998), example (a): 0.2 [0.0524, 0.3339]
    assert round(d.value, 4) == 0.2 and (round(d.low, 4), round(d.high, 4)) == (0.0524, 0.3339)
    assert difference(0, 0, 1, 2).value is None
    same = difference(3, 30, 3, 30)
    assert same.value == 0 and same.low < 0 < same.high
