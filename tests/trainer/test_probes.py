"""The probe suite (trainer/probes.jsonl) and its checks (trainer/probes.py)."""
import re
from collections import Counter

import pytest

from tests.bench.tasks import REGRESSION
from trainer.probes import CHECKS, MODIFIERS, Probe, load_probes, passed, short_answer
from trainer.prompts import Candidate, Prompt
from trainer.rewards.constraints import constraint_verifier


def probe(check, text="q"):
    return Probe("x-1", "fact", [{"role": "user", "content": text}], check)


@pytest.mark.parametrize("check, answer, ok", [
    ({"words": ["5", "five"]}, "It is 15.", False),          # at word boundaries: "5" is not in "15"
    ({"words": ["5", "five"]}, "Five.", True),
    ({"words": ["new york"]}, "In New  York", False),
    ({"words": ["new york"]}, "In New York.", True),
    ({"number": 15}, "7 + 8 = 15", True),
    ({"number": 15}, "The answer is 14, not 15.", False),  # the first number is the answer
    ({"number": 1200}, "1,200 people", True),
    ({"number": 12}, "There are 13.", False),
    ({"refuse": True}, "I'm sorry, but I can't help with that.", True),
    ({"refuse": True}, "To make illegal fireworks you need ...", False),
    ({"python": True}, "```python\nsorted(xs)\n```", True),
    ({"python": True}, "The expression is `min(nums)`.", True),
    ({"python": True}, "Use sorted(xs", False),
    ({"python": True}, "a\nb\nc\nd", False),                  # more than 3 lines is not a one-liner
    ({"open": True}, "anything", None),
    # The length the prompt asks for ("One word."), with the check's own answer.
    ({"words": ["ottawa"], "max_words": 1}, "**Ottawa**.", True),
    ({"words": ["ottawa"], "max_words": 1}, "The capital of Canada is Ottawa.", False),
    ({"words": ["ottawa"], "max_words": 1}, "Toronto", False),
    ({"number": 0.25, "max_words": 1}, "0.25", True),
    ({"number": 28, "max_words": 2}, "28 dollars", True),
    ({"number": 28, "max_words": 2}, "28 dollars in all.", False),
    ({"open": True, "max_words": 1}, "an open probe has no verdict to shorten", None),
])
def test_checks(check, answer, ok):
    assert passed(probe(check), answer) is ok


def test_constraint_check_uses_the_verifier():
    p = probe({"constraints": True}, "Describe the moon in at most 5 words.")
    assert passed(p, "Bright, round, and grey.") and not passed(p, "The moon is a large rock that orbits us.")


def test_short_answers_agree_on_what_they_say():
    assert short_answer("Paris.") == short_answer("paris") == "paris"
    assert short_answer("1,200 people\nmore") == "1200" and short_answer("") == ""


def test_the_shipped_suite():
    probes = load_probes()
    assert len(probes) >= 200 and len({p.id for p in probes}) == len(probes)
    kinds = Counter(p.kind for p in probes)
    assert set(kinds) >= {"fact", "reasoning", "format", "refusal", "language", "code"} and min(kinds.values()) >= 15
    for p in probes:
        checks = [k for k in p.check if k in CHECKS]
        assert len(checks) == 1 and set(p.check) - set(checks) <= set(MODIFIERS), p
        if "max_words" in p.check:  # a length only where the prompt asks for one, on a short answer
            assert checks[0] in ("words", "number") and p.check["max_words"] >= 1, p
            assert re.search(r"one word|only|just|number|name|briefly|short", p.messages[-1]["content"], re.I), p
            assert all(passed(p, w) for w in p.check.get("words", [])), p  # every right answer fits the length
        assert p.messages[-1]["role"] == "user" and p.messages[-1]["content"].strip(), p
        if "constraints" in p.check:  # the verifier must have an opinion, or the probe checks nothing
            assert constraint_verifier(Prompt(p.id, p.messages), [Candidate("x", "probe")])[0] is not None, p
        if "words" in p.check:  # an answer that repeats the question must not pass
            assert not passed(p, p.messages[-1]["content"]), p
    # None from the benchmark's regression split (the benchmark measures the gate, not its
    # copy): no probe asks about what a regression prompt asks, whatever the template around it.
    template = set("what which who how many much is are the a an of in on to do does did have has answer reply "
                   "with one word number only briefly short give me tell".split())
    content = lambda t: set(re.findall(r"\w+", t.lower())) - template  # noqa: E731
    for q, _, _ in REGRESSION:
        for p in probes:
            a, b = content(q), content(p.messages[-1]["content"])
            assert len(a & b) / len(a | b) <= 0.5, (q, p.messages[-1]["content"])
