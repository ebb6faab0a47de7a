"""Timing and progress of a cycle's stages, so the recipe reads as its stages:

    stages = Stages(say)
    with stages("explore"):
        pool = explore_all(...)
    stages.timings  # {"explore": 312.4}

(ART's `track_duration` is the idea.) A stage that raises is timed too, and said: the cycle's
log then shows where a failed cycle spent its time.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator


class Stages:
    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.timings: dict[str, float] = {}
        self._t0 = time.monotonic()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.monotonic()
        try:
            yield
        except BaseException:
            self.timings[name] = round(time.monotonic() - t, 2)
            self.say(f"{name}: failed after {self.timings[name]:.1f}s")
            raise
        self.timings[name] = round(time.monotonic() - t, 2)
        self.say(f"{name}: done in {self.timings[name]:.1f}s")

    def total(self) -> float:
        """Seconds since the cycle began, recorded as timings["total"]."""
        self.timings["total"] = round(time.monotonic() - self._t0, 2)
        return self.timings["total"]
