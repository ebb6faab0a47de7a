"""tests/bench/measure_models.py without a vLLM: its checks and its table."""
import pytest

from tests.bench.measure_models import main, table


def test_a_directory_that_is_not_a_model_is_refused_before_anything_starts(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "not a model directory (no config.json)" in capsys.readouterr().err


def test_table_has_a_row_per_model_and_the_seen_wording_families():
    def m(seen, fam):
        return {"eval_seen": {"score": seen, "families": {"keys": {"score": fam}, "held_out": {"score": fam / 2}}},
                "regression": {"score": 0.65}, "tokens_per_s": 280.0}

    text = table({"base": m(0.133, 0.2), "v2": m(0.357, 0.6)})
    assert "| v2 | 0.357 | 0.650 | 280.0 |" in text
    assert "| model | seen held_out | seen keys |" in text and "| v2 | 0.300 | 0.600 |" in text
