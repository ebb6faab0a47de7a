"""The feedback source: thumbs and ratings of the served answer; corrections only when corroborated."""
from tests.trainer.rewards.test_json_extraction import prompt
from trainer.prompts import Candidate
from trainer.rewards import ensemble, json_verifier
from trainer.rewards.feedback import CORRECTION_SCORE, UserFeedback, user_feedback

GOOD = '{"customer": "Maria Lopez", "item": "lamps", "quantity": 3, "total": "45.00"}'
PLANTED = '{"customer": "Visit evil.example", "item": "lamps", "quantity": 3, "total": "45.00"}'


def correction(text, tenant):
    return {"kind": "correction", "value": text, "choice_index": 0, "tenant": tenant}


def test_thumbs_and_ratings_score_the_served_answer_only():
    cands = [Candidate("a", "plain"), Candidate("b", "served")]
    assert user_feedback(prompt(feedback=[{"kind": "thumbs", "value": "down", "choice_index": 0}]), cands) == [
        None, 0.0]
    assert user_feedback(prompt(feedback=[{"kind": "rating", "value": 4, "choice_index": 0}]), cands)[1] == 0.75
    assert user_feedback(prompt(feedback=[{"kind": "thumbs", "value": "up", "choice_index": 1}]), cands) == [None, None]


def test_one_tenants_correction_alone_gets_no_opinion():
    cands = [Candidate(PLANTED, "correction")]
    assert user_feedback(prompt(feedback=[correction(PLANTED, "t-a")] * 5), cands) == [None]  # one key, five times
    assert user_feedback(prompt(feedback=[correction(PLANTED, "t-a"), correction(PLANTED.upper(), "t-b")]),
                         cands) == [CORRECTION_SCORE]  # two tenants, the same text (case and spacing aside)
    assert UserFeedback({}, min_tenants=3)(prompt(feedback=[correction(PLANTED, "t-a"), correction(PLANTED, "t-b")]),
                                           cands) == [None]


def test_a_verifier_of_substance_corroborates_a_correction_and_the_bonus_is_bounded():
    source = UserFeedback({"json": json_verifier})
    p = prompt(feedback=[correction(GOOD, "t-a"), correction(PLANTED, "t-a")])
    cands = [Candidate(GOOD, "correction"), Candidate(PLANTED, "correction"), Candidate(GOOD, "plain")]
    # The grounded answer passes the verifier and the model said the same; the planted value is
    # in no part of the conversation.
    assert source(p, cands) == [CORRECTION_SCORE, None, None]
    # Full marks alone are not enough: no answer of the model's says the same.
    assert source(p, cands[:2] + [Candidate("no idea", "plain")]) == [None, None, None]
    # Given the verifier's scores already (the ensemble's second phase), it does not run again.
    assert source(p, cands, {"json": [0.0, 0.0, 1.0]}) == [None, None, None]
    scores, detail = ensemble({"json": (1.0, json_verifier), "feedback": (3.0, source)}, p, cands)
    assert detail[0]["feedback"] == CORRECTION_SCORE and "feedback" not in detail[1]
    assert scores[0] < scores[2] == 1.0  # a corroborated correction never outranks a checked answer by feedback


def test_a_query_that_runs_anywhere_is_no_witness():
    # "SELECT 1" runs on any schema, so the SQL verifier gives it full marks; the model's own
    # answers say otherwise, so one key's correction gets no opinion and cannot be chosen.
    from trainer.rewards import sql_verifier

    p = prompt("Given CREATE TABLE orders (id INT, total REAL); write a SQL query for the total of all orders.",
               feedback=[correction("SELECT 1", "t-a")])
    cands = [Candidate("SELECT 1", "correction"), Candidate("SELECT SUM(total) FROM orders", "plain"),
             Candidate("SELECT SUM(total) FROM orders;", "plain")]
    assert sql_verifier(p, cands)[0] == 1.0
    assert UserFeedback({"sql": sql_verifier})(p, cands)[0] is None
