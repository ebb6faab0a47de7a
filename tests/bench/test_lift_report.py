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


def test_the_report_gives_the_sampled_regression_against_base_with_its_interval(tmp_path):
    def m(per_case):
        return {"regression": {"score": 0.5, "tasks": {}},
                "regression_sampled": {"score": sum(per_case) / len(per_case), "n": len(per_case), "samples": 16,
                                       "temperature": 0.7, "per_case": per_case},
                "tokens_per_s": 100.0}
    base = [0.5, 1.0, 0.25, 0.0] * 10
    worse = [x - 0.25 if x >= 0.25 else x for x in base]  # 30 of 40 prompts lose a quarter of their samples
    run = {"name": "ensemble", "env": {}, "base": m(base),
           "cycles": [{"prompts": 80, "feedback": 16, "cycle_s": 600.0, "measured": m(list(base)),
                       "result": {"status": "promoted", "version": "v1", "counts": {"pairs": 70}}},
                      {"prompts": 80, "feedback": 16, "cycle_s": 600.0, "measured": m(worse),
                       "result": {"status": "promoted", "version": "v2", "counts": {"pairs": 70}}}]}
    write_results([run], "python -m tests.bench.lift --cycles 2", tmp_path)
    md = (tmp_path / "tao_lift.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("- regression_sampled"))
    assert "16 samples a prompt at temperature 0.7" in line
    assert "cycle 1: +0.0 [+0.0, +0.0] (n=40, 95%)" in line
    assert "cycle 2: -18.8 [" in line  # 30 x 0.25 / 40
    assert "| base | | | | 0.500 | 0.438 | 100.0 |" in md


def test_sampled_split_scores_each_case_by_the_share_of_right_samples_fake_vllm():
    """A fake OpenAI server (httpx.MockTransport through a patched httpx): what the request
    asks (n, seed per case, temperature) and how the answers are scored; a refused case has
    no score rather than zero."""
    import httpx
    from unittest import mock

    from tests.bench.lift import sampled_split

    sent = []

    def handler(request):
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        body = json.loads(request.content)
        sent.append(body)
        if "refuse" in body["messages"][0]["content"]:
            return httpx.Response(400, json={"error": "no"})
        answers = ["Paris"] * 3 + ["Lyon"] if "France" in body["messages"][0]["content"] else ["7"] * 4
        return httpx.Response(200, json={"choices": [{"message": {"content": a}} for a in answers]})

    transport = httpx.MockTransport(handler)
    real_client = httpx.Client
    cases = [{"messages": [{"role": "user", "content": "France?"}], "gold": "Paris", "metric": "exact"},
             {"messages": [{"role": "user", "content": "Days in a week?"}], "gold": "8", "metric": "number"},
             {"messages": [{"role": "user", "content": "refuse me"}], "gold": "x", "metric": "exact"}]
    with mock.patch("httpx.get", lambda url, **kw: real_client(transport=transport).get(url)), \
            mock.patch("httpx.Client", lambda **kw: real_client(transport=transport, **kw)):
        out = sampled_split("http://fake", cases, samples=4, temperature=0.7, seed=10)
    assert out["per_case"] == [0.75, 0.0, None]
    assert out["n"] == 2 and out["score"] == 0.375
    assert sorted(b["seed"] for b in sent) == [10, 1010, 2010]
    assert all(b["n"] == 4 and b["temperature"] == 0.7 for b in sent)


def test_a_run_stopped_midway_is_reported_as_partial(tmp_path):
    run = {"name": "ensemble", "env": {}, "base": measured(0.05, 0.02, 100.0), "cycles_planned": 3,
           "cycles": [{"prompts": 80, "feedback": 16, "cycle_s": 600.0, "measured": measured(0.4, 0.03, 97.0),
                       "result": {"status": "rejected", "version": "v1", "counts": {"pairs": 70}}}]}
    write_results([run], "python -m tests.bench.lift --cycles 3", tmp_path)
    md = (tmp_path / "tao_lift.md").read_text()
    assert "**Partial: 1 of 3 cycles measured**" in md
    run["cycles"] *= 3
    write_results([run], "python -m tests.bench.lift --cycles 3", tmp_path)
    assert "Partial" not in (tmp_path / "tao_lift.md").read_text()
