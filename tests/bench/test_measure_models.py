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


def test_table_gives_each_model_s_sampled_regression_against_the_first_with_its_interval():
    def m(per_case):
        return {"regression": {"score": 0.65},
                "regression_sampled": {"score": sum(per_case) / len(per_case), "per_case": per_case},
                "tokens_per_s": 280.0}

    base = [1.0, 0.5, 0.0, 0.75] * 10
    text = table({"base": m(base), "same": m(list(base)), "forgot": m([x / 2 for x in base])})
    assert "regression_sampled, each model - base in points" in text
    assert "- same: +0.0 [+0.0, +0.0] (n=40, 95%)" in text
    assert "- forgot: -28.1 [" in text  # mean of base is 0.5625, halved
