"""What users said: thumbs and ratings of the served answer, and their corrections."""
from __future__ import annotations

from trainer.prompts import Candidate, Prompt


def user_feedback(prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
    """What users said about the served answer; a correction is the best answer there is."""
    served = None
    for fb in prompt.feedback:
        if fb.get("choice_index", 0) != 0:
            continue
        kind, value = fb["kind"], fb["value"]
        if kind == "thumbs":
            served = 1.0 if value == "up" else 0.0
        elif kind == "rating":
            served = (float(value) - 1) / 4
    out: list[float | None] = []
    for c in candidates:
        if c.strategy == "served":
            out.append(served)
        elif c.strategy == "correction":
            out.append(1.0)
        else:
            out.append(None)
    return out
