"""The lift benchmark's report writer and suite split, without running the benchmark."""
import json

from tests.bench.lift import ABLATIONS, load_suite, write_results
from tests.bench.tasks import write_jsonl


def measured(seen, unseen, tps):
    return {"eval_seen": {"score": seen, "tasks": {}}, "eval_unseen": {"score": unseen, "tasks": {}},
            "tokens_per_s": tps}


def test_report_has_a_row_per_cycle_and_the_speed_ratio(tmp_path):
    run = {"name": "ensemble", "env": {}, "base": measured(0.05, 0.02, 100.0),
           "cycles": [{"prompts": 80, "feedback": 16, "cycle_s": 600.0, "measured": measured(0.4, 0.03, 97.0),
                       "result": {"status": "promoted", "version": "v1", "counts": {"pairs": 70},
                                  "reward": {"mean": 0.3}, "gate": {"reasons": ["passed"]}, "timings": {}}}]}
    write_results([run], "python -m tests.bench.lift --cycles 1", tmp_path)
    md = (tmp_path / "tao_lift.md").read_text()
    assert "| base | | | | 0.050 | 0.020 | 100.0 |" in md
    assert "| 1 | promoted v1 | 70 | 600.0 | 0.400 | 0.030 | 97.0 |" in md
    assert "Decoding speed after/before: 0.97" in md
    assert "`python -m tests.bench.lift --cycles 1`" in md
    assert (tmp_path / "tao_lift.json").exists()


def test_a_tasks_file_is_split_per_task_and_ablations_are_known(tmp_path):
    cases = [{"task": t, "messages": [{"role": "user", "content": f"{t} {i}?"}], "gold": "1", "metric": "number"}
             for t in ("a", "b") for i in range(9)]
    traffic, evals = load_suite(str(write_jsonl(tmp_path / "t.jsonl", cases)), seed=0, n_traffic=0)
    assert len(traffic) == 12 and sorted(evals) == ["eval_a", "eval_b"]
    assert all(len(v) == 3 for v in evals.values())
    assert not {c["messages"][0]["content"] for c in traffic} & {c["messages"][0]["content"]
                                                                 for v in evals.values() for c in v}
    assert {"ensemble", "verifier_only", "judge_only", "feedback_rm_only", "no_scaffolds", "sft", "dpo_nll"} <= set(
        ABLATIONS)


def test_the_report_shows_each_wording_family_and_tagged_traffic_against_base(tmp_path):
    def m(fields, held_out, calls):
        fam = {"fields": {"n": 15, "score": fields}, "held_out": {"n": 15, "score": held_out}}
        tools = {"tools": {"n": 48, "score": calls, "exact_call": calls / 2}}
        return {"eval_seen": {"score": fields, "tasks": {}, "families": fam,
                              "tagged": {"tagged": {"n": 9, "score": fields}, "untagged": {"n": 6, "score": held_out}}},
                "tools_eval": {"score": calls, "tasks": {}, "families": tools, "tagged": {"tagged": {"n": 48, "score": 0}}},
                "tokens_per_s": 100.0}
    run = {"name": "ensemble", "env": {}, "base": m(0.1, 0.05, 0.2),
           "cycles": [{"prompts": 80, "feedback": 16, "cycle_s": 600.0, "measured": m(0.8, 0.5, 0.6),
                       "result": {"status": "promoted", "version": "v1", "counts": {"pairs": 70}}}]}
    write_results([run], "python -m tests.bench.lift --cycles 1", tmp_path)
    md = (tmp_path / "tao_lift.md").read_text()
    assert "| eval_seen | held_out | 15 | 0.050 | 0.500 |" in md
    assert "| eval_seen | untagged | 6 | 0.050 | 0.500 |" in md
    assert "| tools_eval | tools (exact call) | 48 | 0.100 | 0.300 |" in md  # the tool target's own figure
    assert "| tools_eval | tagged |" not in md  # one group and no exact calls: the split's row says it


def test_a_served_message_is_read_as_its_calls_or_its_text():
    from tests.bench.lift import answer_of
    msg = {"content": None, "tool_calls": [{"id": "c", "type": "function",
                                            "function": {"name": "f", "arguments": '{"a": 1}'}}]}
    assert json.loads(answer_of(msg)) == [{"name": "f", "arguments": '{"a": 1}'}]
    assert answer_of({"content": "hi", "tool_calls": []}) == "hi" and answer_of({"content": None}) == ""
