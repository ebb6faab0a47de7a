"""Intervals for the gate's decisions: a figure without its error bar decides nothing.

- `paired_bootstrap`: the mean of per-item differences (candidate minus reference on the
  same probe), with a percentile interval from resampling the items. Paired, because the
  probes differ far more from each other than the models do on one probe.
- `wilson`: a proportion's interval (the held-out win rate: wins among decided prompts),
  right at the small counts a cycle's held-out split has, where the normal one is not.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Sequence


@dataclass(frozen=True)
class Interval:
    value: float | None   # the estimate (a mean, a proportion)
    low: float | None
    high: float | None
    n: int                # the items it rests on
    confidence: float

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def text(self, points: bool = False) -> str:
        """0.62 [0.41, 0.79] (n=24, 95%); with points=True a difference in points: -1.4 [-3.2, +0.5]."""
        if self.value is None:
            return f"n/a (n={self.n})"
        f = (lambda v: f"{100 * v:+.1f}") if points else (lambda v: f"{v:.2f}")
        return f"{f(self.value)} [{f(self.low)}, {f(self.high)}] (n={self.n}, {self.confidence:.0%})"


def paired_bootstrap(diffs: Sequence[float], *, confidence: float = 0.95, n_boot: int = 4000,
                     seed: int = 0) -> Interval:
    """Mean of `diffs` with a two-sided percentile bootstrap interval. Seeded: the same
    answers always give the same decision."""
    import numpy as np

    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return Interval(None, None, None, 0, confidence)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    return Interval(float(d.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)),
                    int(d.size), confidence)


def wilson(successes: int, n: int, *, confidence: float = 0.95) -> Interval:
    if n == 0:
        return Interval(None, None, None, 0, confidence)
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), n, confidence)


def difference(successes_a: int, n_a: int, successes_b: int, n_b: int, *, confidence: float = 0.95) -> Interval:
    """p_a - p_b for two independent proportions, with Newcombe's interval (from the two
    Wilson intervals): good at small counts and rates near 0 or 1, as thumbs-down rates are."""
    a, b = wilson(successes_a, n_a, confidence=confidence), wilson(successes_b, n_b, confidence=confidence)
    if a.value is None or b.value is None:
        return Interval(None, None, None, min(n_a, n_b), confidence)
    d = a.value - b.value
    low = d - ((a.value - a.low) ** 2 + (b.high - b.value) ** 2) ** 0.5
    high = d + ((a.high - a.value) ** 2 + (b.value - b.low) ** 2) ** 0.5
    return Interval(d, max(-1.0, low), min(1.0, high), min(n_a, n_b), confidence)
