import pytest

from feedback.kafka import KAFKA_API_VERSION
from feedback.registry import CONTROL_SIG_HEADER, read_live, signature_ok
from schemas.events import TOPICS, ModelPromoted, ModelRolledBack, parse_event
from schemas.registry import VersionMetadata
from feedback.registry import get_version, list_versions, next_version, promote, rollback, write_metadata


def make_version(data_dir, version, parent, status="promoted"):
    d = data_dir / "models" / version
    (d / "weights").mkdir(parents=True)
    write_metadata(d, VersionMetadata(version=version, artifact_path=str(d / "weights"), parent=parent,
                                      cycle_id=f"c-{version}", status=status))


def test_versions_listed_in_order_and_half_written_ones_ignored(tmp_path):
    assert next_version(tmp_path) == "v1"
    for v, parent in (("v1", "base"), ("v2", "v1"), ("v10", "v2")):
        make_version(tmp_path, v, parent)
    (tmp_path / "models" / "v11" / "weights").mkdir(parents=True)  # training died: no metadata.json
    assert [v.version for v in list_versions(tmp_path)] == ["v1", "v2", "v10"]
    assert next_version(tmp_path) == "v12"  # never reuse a name, even of an incomplete version
    assert get_version(tmp_path, "v2").parent == "v1"
    with pytest.raises(LookupError, match="known: v1, v2, v10"):
        get_version(tmp_path, "v11")
    assert not list((tmp_path / "models").glob("*/metadata.json.tmp"))


KEY = b"registry-test-key"


def read_control(bootstrap, with_signatures=False):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, api_version=KAFKA_API_VERSION,
                      consumer_timeout_ms=3000)
    tp = TopicPartition(TOPICS["control"], 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    records = list(c)
    c.close()
    if with_signatures:
        return [(r.value, dict(r.headers or []).get(CONTROL_SIG_HEADER)) for r in records]
    return [parse_event(r.value) for r in records]


@pytest.mark.integration
def test_promote_and_rollback_publish_on_the_control_topic(tmp_path, kafka_bootstrap):
    make_version(tmp_path, "v1", "base")
    make_version(tmp_path, "v2", "v1", status="rejected")
    before = len(read_control(kafka_bootstrap))
    promote(kafka_bootstrap, tmp_path, "v2", key=KEY)
    assert read_live(tmp_path) == read_control(kafka_bootstrap, with_signatures=True)[-1]
    rollback(kafka_bootstrap, tmp_path, live="v2", to=None, base_model=tmp_path / "base", reason="bad answers",
             key=KEY)
    rollback(kafka_bootstrap, tmp_path, live="v1", to="base", base_model=tmp_path / "base", reason="start over",
             key=KEY)
    signed = read_control(kafka_bootstrap, with_signatures=True)[before:]
    assert len(signed) == 3 and all(signature_ok(KEY, value, sig) for value, sig in signed)
    assert read_live(tmp_path) == signed[-1], "live.json holds the last event published, as published"
    events = read_control(kafka_bootstrap)[before:]
    assert [type(e) for e in events] == [ModelPromoted, ModelRolledBack, ModelRolledBack]
    assert events[0].payload.version == "v2" and events[0].payload.artifact_path.endswith("v2/weights")
    assert (events[1].payload.version, events[1].payload.rolled_back_from) == ("v1", "v2")
    assert events[1].payload.reason == "bad answers"
    assert events[2].payload.artifact_path == str(tmp_path / "base")
    with pytest.raises(LookupError, match="nothing to roll back"):
        rollback(kafka_bootstrap, tmp_path, live="base", to=None, base_model=tmp_path / "base", reason="x", key=KEY)
    with pytest.raises(LookupError, match="no version 'v9'"):
        promote(kafka_bootstrap, tmp_path, "v9", key=KEY)
    assert read_live(tmp_path) == signed[-1], "a refused promotion records nothing"


def test_the_workers_signing_key_stays_out_of_the_cycle_settings_file_yet_reaches_the_cycle(tmp_path, monkeypatch):
    from trainer.settings import WorkerSettings

    monkeypatch.setenv("TAO_SIGNING_KEY", "the-gateways-key")
    settings = WorkerSettings(data_dir=tmp_path)
    dumped = settings.model_dump_json()  # what the worker writes to the cycle's settings.json
    assert "the-gateways-key" not in dumped
    child = WorkerSettings.model_validate_json(dumped)  # the cycle's child inherits the environment
    assert child.signing_key_bytes() == b"the-gateways-key"
    monkeypatch.delenv("TAO_SIGNING_KEY")
    unset = WorkerSettings(data_dir=tmp_path)
    assert unset.signing_key_bytes() == (tmp_path / "signing.key").read_bytes().strip()  # as the gateways
