from trainer.report import render_markdown, write_report

RESULT = {"cycle_id": "c1", "status": "rejected", "reason": "win rate 0.40 < 0.55", "version": "v3", "parent": "v2",
          "watermark": "2026-11-23 10:00:00+00", "counts": {"prompts": 20, "pairs": 11},
          "select": {"new": 20, "tasks": {"extract_json": 20}}, "reward": {"mean": 0.41234},
          "train": {"train_seconds": 40.5}, "timings": {"explore": 70.1, "total": 190.0},
          "gate": {"promote": False, "reasons": ["win rate 0.40 < 0.55"], "win_rate": 0.4, "wins": 2, "losses": 3,
                   "ties": 2, "win_interval": {"value": 0.4, "low": 0.1176, "high": 0.7693, "n": 5, "confidence": 0.95},
                   "verifier_pass": {"json": {"current": 0.2, "candidate": 0.4, "n": 5}},
                   "probes": {"n": 220, "checked": 214, "pass_rate": {"base": 0.5, "parent": 0.5, "candidate": 0.45},
                              "vs_parent": {"value": -0.05, "low": -0.08, "high": -0.02, "n": 214, "confidence": 0.95},
                              "vs_base": {"value": -0.05, "low": -0.08, "high": -0.02, "n": 214, "confidence": 0.95},
                              "by_kind": {"fact": {"base": 0.6, "parent": 0.6, "candidate": 0.5, "n": 60,
                                                   "vs_parent": {"value": -0.1, "low": -0.16, "high": -0.04, "n": 60,
                                                                 "confidence": 0.99},
                                                   "vs_base": {"value": -0.1, "low": -0.16, "high": -0.04, "n": 60,
                                                               "confidence": 0.99}},
                                          "code": {"base": 0.6, "parent": 0.6, "candidate": 0.6, "n": 30}},
                              "agreement": {"parent": 0.9, "base": 0.9, "n": 130},
                              "drift": {"value": -0.2, "low": -0.25, "high": -0.15, "n": 220, "confidence": 0.95}},
                   "examples": [{"prompt_id": "p1", "verdict": "loss", "current": "{}", "candidate": "hi",
                                 "score_current": 0.2, "score_candidate": 0.0}]}}


def test_markdown_report_says_what_happened_and_why(tmp_path):
    md = render_markdown(RESULT)
    assert "status: **rejected**: win rate 0.40 < 0.55" in md
    assert "version: v3 (parent v2)" in md
    assert "| pairs | 11 |" in md and "mean: 0.412" in md
    assert "win rate (ties are not half wins): 0.40 [0.12, 0.77] (n=5, 95%) (2 wins, 3 losses, 2 ties)" in md
    assert "json verifier pass rate: 0.200 -> 0.400 (n=5)" in md
    assert "candidate - parent: -5.0 [-8.0, -2.0] (n=214, 95%) points" in md
    assert "| fact | 60 | 0.600 | 0.600 | 0.500 | -10.0 [-16.0, -4.0] (n=60, 99%) | -10.0 [" in md
    assert "| code | 30 | 0.600 | 0.600 | 0.600 | n/a | n/a |" in md and "with the parent 0.900" in md and "drift" in md
    assert "p1: loss" in md
    write_report(tmp_path, RESULT)
    assert (tmp_path / "report.md").read_text() == md and (tmp_path / "report.json").exists()


def test_skipped_cycle_report_is_short():
    md = render_markdown({"cycle_id": "c2", "status": "skipped", "reason": "no new prompts", "counts": {}})
    assert "no new prompts" in md and "## Gate" not in md
