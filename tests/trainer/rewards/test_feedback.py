from tests.trainer.rewards.test_json_extraction import prompt
from trainer.prompts import Candidate
from trainer.rewards.feedback import user_feedback


def test_feedback_scores_only_served_answer_and_corrections():
    cands = [Candidate("a", "plain"), Candidate("b", "served"), Candidate("c", "correction")]
    assert user_feedback(prompt(feedback=[{"kind": "thumbs", "value": "down", "choice_index": 0}]), cands) == [
        None, 0.0, 1.0]
    assert user_feedback(prompt(feedback=[{"kind": "rating", "value": 4, "choice_index": 0}]), cands)[1] == 0.75
    assert user_feedback(prompt(), cands) == [None, None, 1.0]
