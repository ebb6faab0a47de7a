"""matplotlib for the benchmarks' charts, headless; None (and a line saying why) when the
`bench` extra is not installed, so a benchmark still writes its tables."""
from __future__ import annotations

from typing import Callable


def pyplot(say: Callable[[str], None] = print):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib missing (install the `bench` extra): no chart")
        return None
    return plt
