from trainer.report import render_markdown, write_report

RESULT = {"cycle_id": "c1", "status": "rejected", "reason": "win rate 0.40 < 0.55", "version": "v3", "parent": "v2",
          "watermark": "2026-11-23 10:00:00+00", "counts": {"prompts": 20, "pairs": 11},
          "select": {"new": 20, "tasks": {"extract_json": 20}}, "reward": {"mean": 0.41234},
          "train": {"train_seconds": 40.5}, "timings": {"explore": 70.1, "total": 190.0},
          "gate": {"promote": False, "reasons": ["win rate 0.40 < 0.55"], "win_rate": 0.4, "wins": 1, "losses": 2,
                   "ties": 2, "verifier_pass": {"json": {"current": 0.2, "candidate": 0.4}},
                   "canary": {"checks_current": 1.0, "checks_candidate": 0.9},
                   "examples": [{"prompt_id": "p1", "verdict": "loss", "current": "{}", "candidate": "hi",
                                 "score_current": 0.2, "score_candidate": 0.0}]}}


def test_markdown_report_says_what_happened_and_why(tmp_path):
    md = render_markdown(RESULT)
    assert "status: **rejected**: win rate 0.40 < 0.55" in md
    assert "version: v3 (parent v2)" in md
    assert "| pairs | 11 |" in md and "mean: 0.412" in md
    assert "win rate 0.40 (1 wins, 2 losses, 2 ties)" in md
    assert "json verifier pass rate: 0.200 -> 0.400" in md
    assert "p1: loss" in md
    write_report(tmp_path, RESULT)
    assert (tmp_path / "report.md").read_text() == md and (tmp_path / "report.json").exists()


def test_skipped_cycle_report_is_short():
    md = render_markdown({"cycle_id": "c2", "status": "skipped", "reason": "no new prompts", "counts": {}})
    assert "no new prompts" in md and "## Gate" not in md
