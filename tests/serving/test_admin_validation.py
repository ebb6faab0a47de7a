"""Admin routes take version names, never paths (issue 13): a rollback `to` or a promote
{version} like "/tmp/x" or "../v1" would resolve outside DATA_DIR/models and publish
whatever metadata.json lies there. Refused with a 400 naming the field; nothing published."""
import json
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from feedback.procs import free_port
from feedback.registry import read_live
from serving.app import create_app
from feedback.auth import add_key
from serving.settings import GatewaySettings
from tests.serving.test_errors import assert_openai_error
from tests.feedback.test_registry import read_control

BAD = ["/tmp/x", "../v1", "v1/../../etc", "..", "", "v1 ", "V1", "base/..", "v-1"]


def admin_client(tmp_path, bootstrap=None):
    admin = add_key(tmp_path / "api_keys", "ops", admin=True)
    settings = GatewaySettings(data_dir=tmp_path, kafka_bootstrap=bootstrap or f"127.0.0.1:{free_port()}",
                               vllm_url=f"http://127.0.0.1:{free_port()}", signing_key="k" * 32)
    return TestClient(create_app(settings)), {"authorization": f"Bearer {admin}"}


def refused(c, auth, bad) -> None:
    r = c.post("/admin/rollback?wait_s=0", json={"to": bad}, headers=auth)
    err = assert_openai_error(r, 400, param="to")
    assert "version name" in err["message"] and "GET /admin/models" in err["message"]
    if "/" not in bad and bad:  # a path parameter cannot hold "/" (the router answers 404 to those)
        quoted = quote(bad, safe="").replace(".", "%2E")  # or the client would resolve ".." itself
        err = assert_openai_error(c.post(f"/admin/models/{quoted}/promote?wait_s=0", headers=auth), 400,
                                  "invalid_value", "version")
        assert "version name" in err["message"]


@pytest.mark.parametrize("bad", BAD)
def test_rollback_to_and_promote_version_must_be_version_names(tmp_path, bad):
    c, auth = admin_client(tmp_path)
    with c:
        refused(c, auth, bad)
    assert read_live(tmp_path) is None


def test_version_names_still_pass_the_check(tmp_path):
    c, auth = admin_client(tmp_path)
    with c:  # past the name check: the registry looks them up (none here)
        assert_openai_error(c.post("/admin/models/v12/promote?wait_s=0", headers=auth), 404, "version_not_found")
        assert_openai_error(c.post("/admin/rollback?wait_s=0", json={"to": "v3"}, headers=auth), 404,
                            "version_not_found", "to")


def plant(where, tmp_path):
    """A metadata.json where a path would lead: what a traversal would publish."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "metadata.json").write_text(json.dumps({"version": "evil", "artifact_path": str(tmp_path / "evil")}))


@pytest.mark.integration
def test_nothing_is_published_for_a_path_real_broker(tmp_path, kafka_bootstrap):
    data = tmp_path / "data"
    (data / "models" / "v1").mkdir(parents=True)
    outside = tmp_path / "x"
    plant(outside, tmp_path)            # "to": "/…/x" (an absolute path)
    plant(data, tmp_path)               # "..": DATA_DIR/models/.. is DATA_DIR
    plant(data / "models" / "v1" / ".." / ".." / "etc", tmp_path)
    before = len(read_control(kafka_bootstrap))
    c, auth = admin_client(data, kafka_bootstrap)
    with c:
        for bad in (str(outside), "../x", "v1/../../etc", ".."):
            refused(c, auth, bad)
        assert len(read_control(kafka_bootstrap)) == before, "nothing may reach tao.control"
        assert read_live(data) is None
        # The check is not in the way of a real rollback: "base" publishes.
        r = c.post("/admin/rollback?wait_s=0", json={"to": "base"}, headers=auth)
        assert r.status_code == 200, r.text
        assert len(read_control(kafka_bootstrap)) == before + 1
