"""`tao keys`: create, list, hash; the key is printed once and stored only as a hash."""
import pytest
from typer.testing import CliRunner

from deploy.cli import app
from feedback.auth import hash_key


def test_keys_add_list_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("TAO_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    r = runner.invoke(app, ["keys", "list"])
    assert r.exit_code == 0 and "refuses every request" in r.output and "TAO_AUTH=open" in r.output
    r = runner.invoke(app, ["keys", "add", "alice", "--admin"])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[0]
    assert key.startswith("tao-") and key not in (tmp_path / "api_keys").read_text()
    r = runner.invoke(app, ["keys", "list"])
    assert "alice\tadmin" in r.output and key not in r.output
    assert runner.invoke(app, ["keys", "hash", key]).output.strip() == hash_key(key)
    r = runner.invoke(app, ["keys", "add", "alice"])
    assert r.exit_code == 1 and "already has a key named 'alice'" in r.output
    r = runner.invoke(app, ["keys", "add", "no spaces allowed"])
    assert r.exit_code == 1 and "letters, digits" in r.output


@pytest.mark.timeout(60)  # before the check, `tao gateway` went on to start a gateway, open to the network
def test_gateway_refuses_open_auth_off_loopback_and_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.setenv("TAO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TAO_AUTH", "open")
    monkeypatch.setenv("TAO_HOST", "0.0.0.0")
    monkeypatch.setenv("TAO_VLLM_URL", "http://127.0.0.1:9")
    r = CliRunner().invoke(app, ["gateway"])
    assert r.exit_code == 2, r.output
    assert "TAO_AUTH" in r.output and "loopback" in r.output and "tao keys add" in r.output
