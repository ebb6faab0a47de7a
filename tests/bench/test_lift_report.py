"""The lift benchmark's report writer and suite split, without running the benchmark."""
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
