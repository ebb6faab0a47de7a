import pytest

from trainer.prompts import Candidate, Prompt
from trainer.rewards.constraints import constraint_verifier, detect_constraints


def prompt(text):
    return Prompt("p1", [{"role": "user", "content": text}])


@pytest.mark.parametrize("text,labels", [
    ("Describe Paris in at most 20 words.", ["max_words<=20"]),
    ("Summarize in no more than fifty words.", []),  # number words above ten are not parsed
    ("Summarize it in 30 words or less.", ["max_words<=30"]),
    ("In one word, what colour is the sky?", ["one_word"]),
    ("Give a one-word answer: capital of France?", ["one_word"]),
    ("Explain DNS in two sentences.", ["sentences==2"]),
    ("Explain DNS in a single sentence.", ["sentences==1"]),
    ("Explain DNS in at most 3 sentences.", ["sentences<=3"]),
    ("Read the first two sentences and translate them.", []),
    ("Write at least 100 words about tea.", ["min_words>=100"]),
    ("A tweet: at most 140 characters.", ["max_chars<=140"]),
    ("What is 17 * 3? Answer with a number.", ["number"]),
    ("What is 17 * 3? Respond with only the number.", ["number"]),
    ("List the planets. Reply in JSON.", ["json"]),
    ("Extract the fields a, b. Reply with only a JSON object.", ["json"]),
    ("Do not reply in JSON, use prose.", []),
    ("Give the pros as bullet points.", ["bullets"]),
    ("Give 3 bullet points on the pros.", ["bullets==3"]),
    ("Don't use bullet points.", []),
    ("Reply in all lowercase.", ["lowercase"]),
    ("Write it with no capital letters.", ["lowercase"]),
    ("Shout it in ALL CAPS.", ["uppercase"]),
    ("Is the sky green? Answer yes or no.", ["yes_no"]),
    ("Give three bullet points, in at most 40 words, all lowercase.", ["max_words<=40", "bullets==3", "lowercase"]),
    ("What is the capital of France?", []),
])
def test_detect_constraints(text, labels):
    assert [label for label, _ in detect_constraints(text)] == labels


@pytest.mark.parametrize("text,good,bad", [
    ("Describe Paris in at most 5 words.", "City of light, France.", "Paris is the capital city of France."),
    ("In one word, what colour is the sky?", "Blue.", "It is blue."),
    ("Explain DNS in two sentences.", "DNS maps names to addresses. It is a distributed database.",
     "DNS maps names to addresses."),
    ("Write at least 5 words.", "one two three four five", "one two"),
    ("At most 10 characters.", "short", "much too long an answer"),
    ("What is 17 * 3? Answer with a number.", "51", "The answer is 51."),
    ("List two colours. Reply in JSON.", '["red", "blue"]', "red and blue"),
    ("Give 2 bullet points.", "Pros:\n- fast\n- cheap", "- fast\n- cheap\n- good"),
    ("Give the pros as bullet points.", "* fast\n* cheap", "It is fast - and cheap."),
    ("Reply in all lowercase.", "hello there", "Hello there"),
    ("Shout it in ALL CAPS.", "HELLO!", "Hello!"),
    ("Is the sky green? Answer yes or no.", "No.", "No, it is blue."),
])
def test_constraint_checks(text, good, bad):
    assert constraint_verifier(prompt(text), [Candidate(good, "plain"), Candidate(bad, "plain")]) == [1.0, 0.0]


def test_constraint_verifier_scores_the_share_met_and_has_no_opinion_without_constraints():
    p = prompt("Give 2 bullet points, all lowercase, in at most 6 words.")
    cands = [Candidate("- fast\n- cheap", "plain"), Candidate("- Fast\n- Cheap", "plain"),
             Candidate("Fast and cheap, and also very good indeed.", "plain")]
    assert constraint_verifier(p, cands) == [1.0, pytest.approx(2 / 3), 0.0]
    assert constraint_verifier(prompt("What is the capital of France?"), cands) == [None, None, None]
    # A constraint in the system message counts too.
    sys = Prompt("p3", [{"role": "system", "content": "Always answer in one word."},
                        {"role": "user", "content": "Capital of France?"}])
    assert constraint_verifier(sys, [Candidate("Paris", "plain"), Candidate("It is Paris", "plain")]) == [1.0, 0.0]


def test_json_constraint_prefers_bare_json_to_a_fence_to_chatter():
    p = prompt("Reply in JSON: what are the primary colours?")
    colours = '["red", "yellow", "blue"]'
    cands = [Candidate(colours, "plain"), Candidate(f"```json\n{colours}\n```", "plain"),
             Candidate(f"Sure: {colours}", "plain")]
    assert constraint_verifier(p, cands) == [1.0, 0.5, 0.0]
