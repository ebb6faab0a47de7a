import pytest
from pydantic import ValidationError

from serving.settings import GatewaySettings
from trainer.settings import WorkerSettings


def test_defaults_are_valid(monkeypatch):
    for k in list(__import__("os").environ):
        if k.startswith("TAO_"):
            monkeypatch.delenv(k)
    assert GatewaySettings().model_name == "tao"
    assert WorkerSettings().db_path.name == "tao.duckdb"


@pytest.mark.parametrize("cls", [GatewaySettings, WorkerSettings])
def test_bad_bootstrap_names_the_variable(cls, monkeypatch):
    monkeypatch.setenv("TAO_KAFKA_BOOTSTRAP", "localhost")
    with pytest.raises(ValidationError, match="TAO_KAFKA_BOOTSTRAP must be host:port"):
        cls()


def test_gateway_port_and_url_checked(monkeypatch):
    monkeypatch.setenv("TAO_PORT", "70000")
    with pytest.raises(ValidationError, match="port"):
        GatewaySettings()
    monkeypatch.delenv("TAO_PORT")
    monkeypatch.setenv("TAO_VLLM_URL", "localhost:8000")
    with pytest.raises(ValidationError, match="TAO_VLLM_URL must start with http"):
        GatewaySettings()


def test_worker_needs_some_reward(monkeypatch):
    for name in ("VERIFIER", "CONSTRAINTS", "AGREEMENT", "MAJORITY", "FEEDBACK", "FUNCTION_FIT", "REWARD_MODEL"):
        monkeypatch.setenv(f"TAO_WEIGHT_{name}", "0")
    with pytest.raises(ValidationError, match="at least one reward weight"):
        WorkerSettings()
    monkeypatch.setenv("TAO_WEIGHT_REWARD_MODEL", "1")  # the feedback reward model alone is enough
    assert WorkerSettings().weight_reward_model == 1.0
    monkeypatch.setenv("TAO_WEIGHT_REWARD_MODEL", "0")
    monkeypatch.setenv("TAO_JUDGE_URL", "http://127.0.0.1:9/v1")  # a judge alone is enough
    assert WorkerSettings().weight_judge == 1.0


def test_exploration_strategies_from_a_comma_list(monkeypatch):
    monkeypatch.setenv("TAO_EXPLORE_STRATEGIES", "plain, fewshot")
    assert WorkerSettings().explore_strategies == ["plain", "fewshot"]
    monkeypatch.setenv("TAO_EXPLORE_STRATEGIES", "plain,bogus")
    with pytest.raises(ValidationError, match="unknown"):
        WorkerSettings()


def test_cli_reports_bad_settings_readably(monkeypatch):
    from typer.testing import CliRunner

    from deploy.cli import app

    monkeypatch.setenv("TAO_MIN_PAIRS", "zero")
    res = CliRunner().invoke(app, ["cycle", "--once", "--worker-url", "http://127.0.0.1:9"])
    assert res.exit_code == 2
    assert "TAO_MIN_PAIRS" in res.output


def test_cron_schedule_is_checked(monkeypatch):
    monkeypatch.setenv("TAO_CYCLE_CRON", "0 3 * * *")
    assert WorkerSettings().cycle_cron == "0 3 * * *"
    monkeypatch.setenv("TAO_CYCLE_CRON", "every night")
    with pytest.raises(ValidationError, match="TAO_CYCLE_CRON is not a crontab expression"):
        WorkerSettings()


def test_gate_settings_are_checked_and_old_names_are_refused(monkeypatch):
    monkeypatch.setenv("TAO_GATE_MIXES", "0.5, 0.25")
    assert WorkerSettings().gate_mixes == [1.0, 0.5, 0.25]  # the trained candidate is always judged first
    monkeypatch.setenv("TAO_GATE_MIXES", "1.5")
    with pytest.raises(ValidationError, match="TAO_GATE_MIXES: numbers in"):
        WorkerSettings()
    monkeypatch.delenv("TAO_GATE_MIXES")
    monkeypatch.setenv("TAO_GATE_THRESHOLD", "0.55")  # the gate before intervals
    with pytest.raises(ValidationError, match="TAO_GATE_THRESHOLD: no longer settings"):
        WorkerSettings()
    monkeypatch.delenv("TAO_GATE_THRESHOLD")
    monkeypatch.setenv("TAO_REPLAY_GENERAL", "32")
    monkeypatch.setenv("TAO_OPTIMIZER", "dpo")
    with pytest.raises(ValidationError, match="needs TAO_OPTIMIZER dpo_nll or sft"):
        WorkerSettings()
    monkeypatch.setenv("TAO_OPTIMIZER", "dpo_nll")
    assert WorkerSettings().replay_general == 32
