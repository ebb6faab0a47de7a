"""The relative judge against the shared stack's real vLLM, the served 135M model judging:
with the reply's JSON schema sent along, even this small a model answers in shape."""
from __future__ import annotations

import pytest

from trainer.explore import served_model_name
from trainer.prompts import Candidate, Prompt
from trainer.rewards.judge import DEFAULT_RUBRIC, make_relative_judge

pytestmark = [pytest.mark.e2e]

PROMPT = Prompt("p", [{"role": "user", "content": "Extract the fields name, city from the text below. Reply with "
                                                  "only a JSON object.\nText: Ann lives in Oslo."}])
CANDS = [Candidate('{"name": "Ann", "city": "Oslo"}', "plain"), Candidate("Ann is a person.", "plain"),
         Candidate('{"name": "Oslo"}', "plain"), Candidate("", "plain")]


def test_a_small_judge_with_the_schema_scores_every_candidate(stack):
    vllm = stack.info["vllm"]
    judge = make_relative_judge(vllm, served_model_name(vllm), DEFAULT_RUBRIC, timeout_s=120, group_chars=4000)
    scores = judge(PROMPT, CANDS)
    assert len(scores) == 4 and all(s is not None and 0.0 <= s <= 1.0 for s in scores)
