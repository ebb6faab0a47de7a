"""Whether a value was copied from the conversation: the numbers a text holds, read by value
("45" is in "$45.00", "10" is not in "100"). Shared by the tool-call verifier
(trainer/rewards/contract.py) and the pairs' choosable check (trainer/pairs.py)."""
from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*")


def numbers_in(text: str) -> set[float]:
    out = set()
    for n in _NUMBER.findall(text):
        try:
            out.add(float(n.replace(",", "")))
        except ValueError:  # "1.2.3": a version or a date, not one number
            continue
    return out
