"""Unit tests of the lift benchmark's task generators, file format, gold wall and metrics.
Plain tests (no bench marker): they run in `make test` and take well under a second."""
from __future__ import annotations

import json
import re

import pytest

from tests.bench import metrics, tasks
from tests.bench.metrics import score_case, summarize
from tests.bench.tasks import FIELD_SETS, make_suite, read_jsonl, strip_gold, write_jsonl


@pytest.fixture(scope="module")
def suite():
    return make_suite(seed=0)


def _prompt(case) -> str:
    return case["messages"][-1]["content"]


# -- generators -------------------------------------------------------------------------------
def test_suite_layout(suite):
    assert {k: len(v) for k, v in suite.items()} == {
        "traffic": 160, "eval_seen": 75, "eval_unseen": 75, "math_traffic": 80, "math_eval": 60,
        "tools_traffic": 60, "tools_eval": 48, "regression": len(tasks.REGRESSION)}
    assert len(tasks.REGRESSION) >= 30
    assert len(FIELD_SETS) >= 5 and all(len(fs.templates) >= 3 for fs in FIELD_SETS.values())


def test_deterministic_with_seed(suite):
    assert make_suite(seed=0) == suite
    other = make_suite(seed=1)
    assert other["traffic"] != suite["traffic"] and other["math_eval"] != suite["math_eval"]


def test_every_case_valid_and_round_trips(suite, tmp_path):
    for name, cases in suite.items():
        for case in cases:
            tasks.validate_case(case)
        path = write_jsonl(tmp_path / f"{name}.jsonl", cases)
        assert read_jsonl(path) == cases


def test_unseen_field_sets_never_in_traffic(suite):
    seen_tasks = {c["task"] for c in suite["traffic"]} | {c["task"] for c in suite["eval_seen"]}
    unseen_tasks = {c["task"] for c in suite["eval_unseen"]}
    assert seen_tasks == {FIELD_SETS[n].task for n in tasks.SEEN}
    assert unseen_tasks == {FIELD_SETS[n].task for n in tasks.UNSEEN}
    assert not seen_tasks & unseen_tasks
    seen_fields = {tuple(c["gold"]) for c in suite["traffic"]}
    assert not seen_fields & {tuple(c["gold"]) for c in suite["eval_unseen"]}
    # every field set and every template is used
    for split, names in (("traffic", tasks.SEEN), ("eval_unseen", tasks.UNSEEN)):
        for n in names:
            fs = FIELD_SETS[n]
            texts = [_prompt(c) for c in suite[split] if c["task"] == fs.task]
            for t in fs.templates:
                head = t.split("{")[0] or t.split("}")[1].split("{")[0]
                assert any(head.strip().lower() in x.lower() for x in texts), (n, t)


def test_eval_prompts_disjoint_from_traffic_and_unique(suite):
    traffic = {_prompt(c) for c in suite["traffic"] + suite["math_traffic"]}
    for split in ("eval_seen", "eval_unseen", "math_eval", "regression"):
        assert not traffic & {_prompt(c) for c in suite[split]}, split
    for split, cases in suite.items():
        assert len({_prompt(c) for c in cases}) == len(cases), split


def _as_prompt(case):
    from trainer.prompts import Prompt

    return Prompt("p", case["messages"], contract=case.get("params", {}))


def test_extraction_gold_is_in_text_and_traffic_wordings_parse_for_trainer(suite):
    from trainer.rewards.intent import requested_keys
    for case in suite["traffic"] + suite["eval_seen"] + suite["eval_unseen"]:
        assert case["text"] in _prompt(case)
        assert all(str(v).lower() in case["text"].lower() for v in case["gold"].values()), case
        assert score_case(case, json.dumps(case["gold"])) == 1.0
        # Every wording of the traffic states its keys so that the trainer reads them (in words,
        # or only in the json_schema); the held-out wording is one it was never written for.
        if case["family"] in tasks.TRAFFIC_FAMILIES:
            assert requested_keys(_as_prompt(case)) == list(case["gold"]), case
        else:
            assert case["family"] == tasks.HELD_OUT_FAMILY and requested_keys(_as_prompt(case)) is None


def test_wording_families_and_tags(suite):
    families = lambda split: {c["family"] for c in suite[split]}
    assert families("traffic") == set(tasks.TRAFFIC_FAMILIES) and len(tasks.TRAFFIC_FAMILIES) >= 3
    assert families("eval_seen") == families("eval_unseen") == {*tasks.TRAFFIC_FAMILIES, tasks.HELD_OUT_FAMILY}
    assert all(("params" in c) == (c["family"] == "schema") for c in suite["traffic"])
    for split in tasks.TRAFFIC_SPLITS:  # about half the traffic of each kind carries the task tag
        if split == "math_traffic":
            continue
        share = sum(c["tagged"] for c in suite[split]) / len(suite[split])
        assert 0.35 <= share <= 0.65, (split, share)


def test_tool_cases_offer_the_right_function_among_others_and_gold_is_its_call(suite):
    from trainer.prompts import Candidate
    from trainer.rewards.contract import tool_call_verifier
    for case in suite["tools_traffic"] + suite["tools_eval"]:
        tools = case["params"]["tools"]
        names = [t["function"]["name"] for t in tools]
        assert len(tools) == 3 == len(set(names)) and case["gold"]["name"] in names
        right = json.dumps([{"name": case["gold"]["name"], "arguments": json.dumps(case["gold"]["arguments"])}])
        assert score_case(case, right) == 1.0
        # The trainer's own verifier agrees the gold call is a valid, grounded call.
        gold = Candidate("", "gold", tool_calls=[{"name": case["gold"]["name"],
                                                  "arguments": json.dumps(case["gold"]["arguments"])}])
        assert tool_call_verifier(_as_prompt(case), [gold]) == [1.0], case
    assert {c["gold"]["name"] for c in suite["tools_eval"]} == set(tasks.FUNCTIONS)


def test_math_prompts_read_as_math(suite):
    from trainer.selection import infer_task
    for case in suite["math_eval"]:
        assert infer_task(_prompt(case)) == "math", _prompt(case)


def test_traffic_survives_pii_scrub(suite):
    # The select stage scrubs prompts; a gold value mangled there could never be learned.
    from trainer.scrub import scrub
    for split in ("traffic", "math_traffic", "eval_seen", "eval_unseen"):
        for case in suite[split]:
            assert scrub(_prompt(case)) == (_prompt(case), 0), _prompt(case)


# -- the gold wall ------------------------------------------------------------------------------
def test_gold_cannot_reach_trainer(suite):
    for split in tasks.TRAFFIC_SPLITS:
        for case in suite[split]:
            sent = strip_gold(case)
            assert set(sent) == {"task", "messages"} | ({"params"} if case.get("params") else set())
            assert sent["messages"] == case["messages"] and sent["messages"] is not case["messages"]
            assert sent.get("params") == case.get("params")
            sent = {k: v for k, v in sent.items() if k != "params"}  # the contract: a schema, functions
            blob = json.dumps(sent)
            assert '"gold"' not in blob and '"metric"' not in blob and "json_fields" not in blob
            if case["metric"] == "number":     # the answer is not in the prompt
                assert case["gold"] not in re.findall(r"\d+", _prompt(case)), _prompt(case)
            elif case["metric"] == "tool_call":  # the call is nowhere in what is sent
                assert '"arguments"' not in json.dumps(strip_gold(case)) and "{" not in _prompt(case)
            else:                               # no answer object: the prompt is the bare prompt
                assert "{" not in blob.replace('{"task"', "").replace('{"role"', "")
    # extra keys in a case (ids, notes) are dropped too
    assert strip_gold({**suite["traffic"][0], "id": 3, "answer": "x"}).keys() == {"task", "messages"}


def test_regression_gold_not_in_own_prompt(suite):
    for case in suite["regression"]:
        if case["metric"] == "exact":
            for alt in case["gold"].split("|"):
                assert metrics.score_exact(alt, _prompt(case)) == 0.0, case
        else:
            assert case["gold"] not in re.findall(r"\d+", _prompt(case)), case


# -- JSONL errors -------------------------------------------------------------------------------
def test_bad_line_raises_with_line_number(tmp_path, suite):
    good = json.dumps(suite["math_eval"][0])
    bad_cases = {
        "not JSON": "{oops",
        "missing key(s) ['gold']": json.dumps({k: v for k, v in suite["math_eval"][0].items() if k != "gold"}),
        "`metric` must be one of": json.dumps({**suite["math_eval"][0], "metric": "bleu"}),
        "non-empty object": json.dumps({**suite["traffic"][0], "gold": "Maria"}),
        "is not a number": json.dumps({**suite["math_eval"][0], "gold": "eight"}),
        "last message must be the user's": json.dumps(
            {**suite["math_eval"][0], "messages": [{"role": "assistant", "content": "hi"}]}),
    }
    for why, line in bad_cases.items():
        path = tmp_path / "t.jsonl"
        path.write_text(good + "\n\n" + line + "\n")
        with pytest.raises(tasks.TaskFileError, match=rf"t\.jsonl:3: .*{re.escape(why)}"):
            read_jsonl(path)
    with pytest.raises(tasks.TaskFileError, match="case 2"):
        write_jsonl(tmp_path / "w.jsonl", [suite["math_eval"][0], {"task": "x"}])


def test_cli_writes_every_split(tmp_path):
    tasks.main(["--out", str(tmp_path), "--seed", "3", "--n-traffic", "20", "--n-eval", "10"])
    files = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    assert files == sorted(f"{k}.jsonl" for k in make_suite(3))
    assert len(read_jsonl(tmp_path / "eval_unseen.jsonl")) == 10


# -- metrics ------------------------------------------------------------------------------------
ORDER = {"task": "extract_orders", "metric": "json_fields", "messages": [{"role": "user", "content": "x"}],
         "gold": {"customer": "Maria Lopez", "item": "coffee mugs", "quantity": "3", "total": "45.00"}}


@pytest.mark.parametrize("answer, want", [
    ('{"customer": "Maria Lopez", "item": "coffee mugs", "quantity": 3, "total": 45}', 1.0),
    ('```json\n{"Customer": " maria  lopez ", "ITEM": "Coffee Mugs.", "quantity": "3", "total": "$45.00"}\n```', 1.0),
    ('Sure! {"customer": "Maria Lopez", "item": "mugs", "quantity": 3.0, "total": "45.5"} Hope it helps.', 0.5),
    ('{"customer": "Maria Lopez", "item": "coffee mugs", "quantity": [3], "total": null}', 0.5),
    ('{"name": "Maria Lopez"}', 0.0),
    ('{"customer": "Maria Lopez", "item": "coffee mugs",', 0.0),   # truncated
    ("customer: Maria Lopez, item: coffee mugs", 0.0),            # no JSON
    ('[{"customer": "Maria Lopez"}]', 0.25),                      # the object inside a list counts
    ('["Maria Lopez", "coffee mugs"]', 0.0),                      # no object
    ('{"customer": "Maria Lopez"} and {"total": 45}', 0.0),       # first { to last }: not JSON
    (None, 0.0),
])
def test_json_fields(answer, want):
    assert score_case(ORDER, answer) == pytest.approx(want)


def test_json_field_values():
    vm = metrics.value_matches
    assert vm("45.00", 45) and vm("45.00", "45") and vm("1299.99", "$1,299.99") and vm("12", "12 kg")
    assert vm("the Grand Theater", "Grand Theater") and vm("May 14", "may 14")
    assert not vm("12", "12 apples and more") and not vm("12", "twelve") and not vm("3", True)
    assert not vm("May 14", "May 14th") and not vm("45.00", "45.01")


@pytest.mark.parametrize("gold, answer, want", [
    ("8", "Tom has 3 + 5 = 8 apples.", 1.0),
    ("8", "The answer is 8.", 1.0),
    ("8", "8", 1.0),
    ("8", "8 apples, not 5", 0.0),                  # the LAST number counts
    ("1200", "That makes 1,200 stamps in all.", 1.0),
    ("12.5", "12.50", 1.0),
    ("-3", "It is -3 degrees", 1.0),
    ("3", "5-3", 1.0),                              # a hyphen after a digit is no sign
    ("8", "eight", 0.0),
    ("8", "", 0.0),
])
def test_number(gold, answer, want):
    case = {"task": "math", "metric": "number", "gold": gold, "messages": []}
    assert score_case(case, answer) == want


@pytest.mark.parametrize("gold, answer, want", [
    ("Paris", "Paris", 1.0),
    ("Paris", "  paris. ", 1.0),
    ("Paris", "The capital of France is **Paris**!", 1.0),
    ("Paris", "Parisian", 0.0),
    ("Paris", "Lyon", 0.0),
    ("carbon dioxide|CO2", "Plants take in CO2.", 1.0),
    ("carbon dioxide|CO2", "Carbon-dioxide", 1.0),
    ("carbon dioxide|CO2", "carbon", 0.0),
    ("cow|cows", "Cows say moo.", 1.0),
    ("Paris", " ".join(["word"] * metrics.EXACT_WINDOW) + " Paris", 0.0),   # too late in a ramble
])
def test_exact(gold, answer, want):
    case = {"task": "regression", "metric": "exact", "gold": gold, "messages": []}
    assert score_case(case, answer) == want


def test_summarize():
    math = {"task": "math", "metric": "number", "gold": "8", "messages": []}
    cases = [ORDER, ORDER, ORDER, math, math]
    answers = ['{"customer": "Maria Lopez", "item": "coffee mugs", "quantity": 3, "total": 45}',
               'Here: {"customer": "Maria Lopez"}', "no idea", "8", None]
    s = summarize(cases, answers)
    assert s["extract_orders"] == {"metric": "json_fields", "n": 3, "score": pytest.approx(1.25 / 3),
                                   "failed": 0, "valid_json": pytest.approx(2 / 3),
                                   "json_only": pytest.approx(1 / 3), "all_fields": pytest.approx(1 / 3)}
    assert s["math"] == {"metric": "number", "n": 2, "score": 0.5, "failed": 1}
    assert metrics.overall(s) == pytest.approx((1.25 + 1) / 5)
    with pytest.raises(ValueError):
        summarize(cases, answers[:-1])


INVOICE = {"task": "tool_send_invoice", "metric": "tool_call", "family": "tools", "messages": [],
           "gold": {"name": "send_invoice", "arguments": {"customer": "Ann Lee", "amount": 45.5}}}


@pytest.mark.parametrize("answer,want", [
    ('[{"name": "send_invoice", "arguments": "{\\"customer\\": \\"Ann Lee\\", \\"amount\\": 45.5}"}]', 1.0),
    ('[{"name": "send_invoice", "arguments": {"customer": "ann lee", "amount": "45.50"}}]', 1.0),
    ('[{"name": "send_invoice", "arguments": "{\\"customer\\": \\"Ann Lee\\"}"}]', 0.5),       # one missing
    ('[{"name": "send_invoice", "arguments": "{\\"customer\\": \\"Ann Lee\\", \\"amount\\": 45.5, '
     '\\"note\\": \\"x\\"}"}]', 0.5),                                                         # one invented
    ('[{"name": "book_room", "arguments": "{\\"customer\\": \\"Ann Lee\\", \\"amount\\": 45.5}"}]', 0.0),
    ('[{"name": "send_invoice", "arguments": "{not json"}]', 0.0),
    ('[]', 0.0), ("send_invoice(customer='Ann Lee', amount=45.5)", 0.0), ('{"name": "send_invoice"}', 0.0),
])
def test_tool_call_metric(answer, want):
    assert score_case(INVOICE, answer) == pytest.approx(want)


def test_summaries_by_family_count_exact_calls():
    right = '[{"name": "send_invoice", "arguments": {"customer": "Ann Lee", "amount": 45.5}}]'
    half = '[{"name": "send_invoice", "arguments": {"customer": "Ann Lee"}}]'
    s = summarize([INVOICE, INVOICE, ORDER], [right, half, "{}"], by=lambda c: c.get("family", "none"))
    assert set(s) == {"tools", "none"}
    assert s["tools"]["exact_call"] == 0.5 and s["tools"]["score"] == 0.75 and "exact_call" not in s["none"]
