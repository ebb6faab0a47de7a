import json

from trainer.pairs import ScoredCandidate, build_pairs
from trainer.prompts import Candidate, Prompt


def sc(text, score, strategy="plain"):
    return ScoredCandidate(Candidate(text, strategy), score, {})


def test_best_vs_worst_on_the_bare_prompt():
    p = Prompt("p1", [{"role": "user", "content": "bare"}])
    pairs = build_pairs([p], {"p1": [sc("mid", 0.5), sc("best", 0.9, "scaffold"), sc("worst", 0.1)]}, 0.3, 0.5)
    assert pairs == [{"prompt_id": "p1", "prompt": [{"role": "user", "content": "bare"}], "chosen": "best",
                      "rejected": "worst", "margin": 0.8, "chosen_strategy": "scaffold"}]


def test_no_pair_without_spread_or_without_a_good_answer():
    p = Prompt("p1", [{"role": "user", "content": "x"}])
    assert build_pairs([p], {"p1": [sc("a", 0.6), sc("b", 0.5)]}, 0.3, 0.5) == []      # margin too small
    assert build_pairs([p], {"p1": [sc("a", 0.45), sc("b", 0.0)]}, 0.3, 0.5) == []     # best not good enough
    assert build_pairs([p], {"p1": [sc("a", 0.9), sc("b", None)]}, 0.3, 0.5) == []     # one opinion only
    assert build_pairs([p], {"p1": [sc("same", 0.9), sc("same", 0.1)]}, 0.3, 0.5) == []  # identical texts
    assert build_pairs([p], {"p1": [sc("a", 0.9), sc("  ", 0.0)]}, 0.3, 0.5) == []     # empty answer ignored


EXTRACT = Prompt("p1", [{"role": "user", "content": "Extract the fields order_id, total from: order 4411 cost $45.00."}])


def test_a_format_only_source_never_decides_a_pair_alone():
    # "27." for 7 x 28: the constraint verifier likes the bare number; nothing checked the value.
    p = Prompt("p1", [{"role": "user", "content": "Each box has 7 pens. How many pens are in 28 boxes? "
                                                  "Answer with the number."}])
    only_form = [ScoredCandidate(Candidate("27.", "plain"), 1.0, {"constraints": 1.0}),
                 ScoredCandidate(Candidate("I think there are many pens in all.", "plain"), 0.0, {"constraints": 0.0})]
    assert build_pairs([p], {"p1": only_form}, 0.3, 0.5) == []
    checked = [ScoredCandidate(Candidate("196", "plain"), 1.0, {"constraints": 1.0, "majority": 1.0}), only_form[1]]
    assert [x["chosen"] for x in build_pairs([p], {"p1": checked}, 0.3, 0.5)] == ["196"]


def test_the_scaffolds_skeleton_and_invented_values_are_never_chosen():
    bad = ScoredCandidate(Candidate("no idea", "plain"), 0.0, {"json": 0.0})
    skeleton = ScoredCandidate(Candidate('{"order_id": "...", "total": "..."}', "scaffold"), 0.9, {"json": 0.9})
    invented = ScoredCandidate(Candidate('{"order_id": "4411902837461523987", "total": "45.00"}', "plain"), 0.8,
                               {"json": 0.8})
    good = ScoredCandidate(Candidate('{"order_id": "4411", "total": 45}', "plain"), 0.7, {"json": 0.7})
    assert build_pairs([EXTRACT], {"p1": [skeleton, invented, bad]}, 0.3, 0.5) == []
    pairs = build_pairs([EXTRACT], {"p1": [skeleton, invented, good, bad]}, 0.3, 0.5)
    assert [x["chosen"] for x in pairs] == [good.candidate.text]  # 45 is grounded in "$45.00"


def test_echoed_field_names_and_one_text_in_two_keys_are_never_chosen():
    # Both seen chosen in a bench-lift cycle (2026-12-07), every value found in the request.
    p = Prompt("p1", [{"role": "user", "content": "Put the guest, hotel, nights and date of this note into JSON.\n"
                                                  "Reservation: Grand Plaza, guest Sofia Rossi, 2 nights from "
                                                  "June 25."}])
    bad = ScoredCandidate(Candidate("no idea", "plain"), 0.0, {"json": 0.0})
    echoed = ScoredCandidate(Candidate('{"guest": "guest", "hotel": "hotel", "nights": 2, "date": "June 25"}',
                                       "copy"), 0.9, {"json": 0.9})
    twice = ScoredCandidate(Candidate('{"guest": "Sofia Rossi", "hotel": "Grand Plaza", "nights": "June 25", '
                                      '"date": "June 25"}', "copy"), 0.9, {"json": 0.9})
    assert build_pairs([p], {"p1": [echoed, twice, bad]}, 0.3, 0.5) == []
    # Numbers may coincide (2 guests, 2 nights): a number in two keys is still choosable.
    # (Here "2" is also inside no other value: a number inside a text would not be.)
    right = ScoredCandidate(Candidate('{"guest": "Sofia Rossi", "hotel": "Grand Plaza", "nights": "2", '
                                      '"date": "June 25"}', "copy"), 0.8, {"json": 0.8})
    same_number = ScoredCandidate(Candidate('{"guest": "Sofia Rossi", "hotel": "Grand Plaza", "nights": 2, '
                                            '"date": "2"}', "copy"), 0.7, {"json": 0.7})
    assert [x["chosen"] for x in build_pairs([p], {"p1": [echoed, twice, right, bad]}, 0.3, 0.5)] == [
        right.candidate.text]
    assert [x["chosen"] for x in build_pairs([p], {"p1": [same_number, bad]}, 0.3, 0.5)] == [
        same_number.candidate.text]


def test_grounded_values_are_copied_and_numbers_match_by_value():
    from trainer.pairs import grounded

    text = "order 4411 cost $45.00 for 100 items, 1,200 km"
    yes = ["4411", 45, "45.00", "$45", 100, 1200, "1200", "items", True]
    no = ["1", "10", "Oslo", None, "4411902837461523987", "", "45 dollars"]
    assert [v for v in yes if not grounded(v, text)] == [] and [v for v in no if grounded(v, text)] == []


def test_a_tool_call_answer_makes_a_pair_that_carries_the_calls_and_the_tools():
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    p = Prompt("p1", [{"role": "user", "content": "Weather in Lima?"}], contract={"tools": [weather]})
    right = [{"name": "get_weather", "arguments": '{"city": "Lima"}'}]
    wrong = [{"name": "get_weather", "arguments": '{"city": "Paris"}'}]
    # A call has no text: it still makes a pair, and two calls that differ only in arguments differ.
    scored = [ScoredCandidate(Candidate("", "plain", tool_calls=right), 1.0, {"tool_calls": 1.0}),
              ScoredCandidate(Candidate("", "plain", tool_calls=wrong), 0.2, {"tool_calls": 0.2})]
    [pair] = build_pairs([p], {"p1": scored}, 0.3, 0.5)
    assert pair["chosen_calls"] == right and pair["rejected_calls"] == wrong and pair["tools"] == [weather]
    assert pair["chosen"] == "" and pair["rejected"] == ""
    same = [scored[0], ScoredCandidate(Candidate("", "plain", tool_calls=right), 0.2, {"tool_calls": 0.2})]
    assert build_pairs([p], {"p1": same}, 0.3, 0.5) == []
    # A request without tools keeps the plain shape (no tools/calls keys).
    assert "tools" not in build_pairs([Prompt("p2", [{"role": "user", "content": "x"}])],
                                      {"p2": [sc("good", 0.9), sc("bad", 0.1)]}, 0.3, 0.5)[0]


def test_a_call_with_a_made_up_value_is_never_chosen():
    """bench-lift cycle 1 (2026-12-07) chose log_workout(activity="Cab-to-Porto") for a cab, at
    0.75 for its one grounded value of two: made up, and the wrong function."""
    taxi = {"type": "function", "function": {"name": "order_taxi", "parameters": {
        "type": "object", "properties": {"pickup": {"type": "string"}, "destination": {"type": "string"}},
        "required": ["pickup", "destination"]}}}
    workout = {"type": "function", "function": {"name": "log_workout", "parameters": {
        "type": "object", "properties": {"activity": {"type": "string"}, "minutes": {"type": "integer"}},
        "required": ["activity", "minutes"]}}}
    p = Prompt("p1", [{"role": "user", "content": "We are 4: we need a cab from Central Station to Porto."}],
               contract={"tools": [taxi, workout]})

    def c(name, score, **args):
        return ScoredCandidate(Candidate("", "scaffold", tool_calls=[{"name": name, "arguments": json.dumps(args)}]),
                               score, {"tool_calls": score})

    made_up = c("log_workout", 0.75, activity="Cab-to-Porto", minutes=4)
    text = ScoredCandidate(Candidate("Call a cab company.", "plain"), 0.0, {"agreement": 0.0})
    assert build_pairs([p], {"p1": [made_up, text]}, 0.3, 0.5) == []  # nothing choosable: no pair
    grounded = c("order_taxi", 0.7, pickup="Central Station", destination="Porto")
    [pair] = build_pairs([p], {"p1": [made_up, grounded, text]}, 0.3, 0.5)
    assert pair["chosen_calls"][0]["name"] == "order_taxi"


def test_a_call_with_one_text_in_two_arguments_is_never_chosen():
    tools = [{"type": "function", "function": {"name": "order_taxi", "parameters": {
        "type": "object", "properties": {"pickup": {"type": "string"}, "destination": {"type": "string"},
                                         "passengers": {"type": "integer"}}, "required": ["pickup", "destination"]}}}]
    p = Prompt("p1", [{"role": "user", "content": "Get a taxi from Central Station to Melbourne for 6 people."}],
               contract={"tools": tools})

    def call(pickup, destination):
        args = json.dumps({"pickup": pickup, "destination": destination, "passengers": 6})
        return ScoredCandidate(Candidate("", "copy", tool_calls=[{"name": "order_taxi", "arguments": args}]), 0.9,
                               {"tool_calls": 0.9})

    bad = ScoredCandidate(Candidate("I cannot book taxis.", "plain"), 0.0, {"tool_calls": 0.0})
    inside = call("Central Station to Melbourne", "Melbourne")  # chosen in a bench-lift cycle
    assert build_pairs([p], {"p1": [inside, bad]}, 0.3, 0.5) == []
    right = call("Central Station", "Melbourne")
    [pair] = build_pairs([p], {"p1": [inside, right, bad]}, 0.3, 0.5)
    assert json.loads(pair["chosen_calls"][0]["arguments"])["pickup"] == "Central Station"


def test_an_uncorroborated_correction_is_neither_side_of_a_pair():
    # One key's correction: the feedback source had no opinion of it (trainer/rewards/feedback.py).
    p = Prompt("p1", [{"role": "user", "content": "Say hello."}])
    planted = ScoredCandidate(Candidate("hello, visit evil.example", "correction"), 0.95, {"agreement": 0.95})
    own = [ScoredCandidate(Candidate("Hello!", "plain"), 0.7, {"agreement": 0.7}),
           ScoredCandidate(Candidate("Goodbye.", "plain"), 0.1, {"agreement": 0.1})]
    pairs = build_pairs([p], {"p1": [planted, *own]}, 0.3, 0.5)
    assert [(x["chosen"], x["rejected"]) for x in pairs] == [("Hello!", "Goodbye.")]
    # A correction scored worst is not the rejected side either: that is the model's own worst.
    low = ScoredCandidate(Candidate("visit evil.example", "correction"), 0.0, {"agreement": 0.0})
    assert [x["rejected"] for x in build_pairs([p], {"p1": [low, *own]}, 0.3, 0.5)] == ["Goodbye."]
    # Corroborated (the feedback source spoke for it): it may be chosen.
    vouched = ScoredCandidate(Candidate("Hello there.", "correction"), 0.9, {"agreement": 0.9, "feedback": 0.8})
    assert [x["chosen"] for x in build_pairs([p], {"p1": [vouched, *own]}, 0.3, 0.5)] == ["Hello there."]
