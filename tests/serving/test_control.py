"""tao.control is trusted only when signed: the verification (serving/control.verify_control),
the consumer against a real Tansu, and the gateway's start on the registry's live version."""
from __future__ import annotations

import asyncio
import functools
import threading
import time
from pathlib import Path

import pytest

from feedback.kafka import KAFKA_API_VERSION
from feedback.registry import CONTROL_SIG_HEADER, control_signature, write_live
from schemas.events import (
    ChatCompleted, ChatCompletedPayload, ModelPromoted, ModelPromotedPayload, ModelRolledBack, ModelRolledBackPayload,
)
from serving import swap as gateway_swap
from serving.control import ControlConsumer, Refused, registry_live, verify_control
from serving.metrics import GatewayMetrics
from serving.settings import GatewaySettings

KEY = b"k" * 32


@pytest.fixture
def registry(tmp_path) -> Path:
    """DATA_DIR with versions v1 (weights and adapter) under models/."""
    for part in ("weights", "adapter"):
        (tmp_path / "models" / "v1" / part).mkdir(parents=True)
    (tmp_path / "base").mkdir()
    return tmp_path


def promoted(data: Path, version="v1", artifact=None, adapter=None) -> bytes:
    return ModelPromoted(payload=ModelPromotedPayload(
        version=version, artifact_path=str(artifact or data / "models" / version / "weights"),
        adapter_path=str(adapter) if adapter else None)).to_bytes()


def verifier(data: Path):
    return functools.partial(verify_control, key=KEY, models=data / "models", base_model=data / "base")


def refusal(verify, value, signature) -> str:
    with pytest.raises(Refused) as e:
        verify(value, signature)
    return e.value.reason


def test_a_signed_event_naming_registry_paths_is_accepted_with_its_paths_resolved(registry):
    value = promoted(registry, artifact=registry / "models" / "v1" / ".." / "v1" / "weights",
                     adapter=registry / "models" / "v1" / "adapter")
    ev = verifier(registry)(value, control_signature(KEY, value))
    assert ev.payload.version == "v1"
    assert ev.payload.artifact_path == str((registry / "models" / "v1" / "weights").resolve())
    assert ev.payload.adapter_path == str((registry / "models" / "v1" / "adapter").resolve())


def test_unsigned_wrongly_signed_and_tampered_events_are_refused(registry):
    verify = verifier(registry)
    value = promoted(registry)
    assert refusal(verify, value, None) == "unsigned"
    assert refusal(verify, value, control_signature(b"another key" * 3, value)) == "bad_signature"
    assert refusal(verify, value, b"") == "bad_signature"
    tampered = value.replace(b'"v1"', b'"v2"', 1)
    assert refusal(verify, tampered, control_signature(KEY, value)) == "bad_signature"
    # A MAC over the bare value (no domain prefix), as a completion-id style signature, is not valid.
    import hashlib
    import hmac

    assert refusal(verify, value, hmac.new(KEY, value, hashlib.sha256).hexdigest().encode()) == "bad_signature"


def test_signed_events_naming_paths_outside_the_registry_are_refused(registry, tmp_path_factory):
    verify = verifier(registry)
    outside = tmp_path_factory.mktemp("elsewhere")
    escape = registry / "models" / "v1" / "escape"
    escape.symlink_to(outside)  # inside by name, outside once resolved
    for value in (promoted(registry, artifact=outside),
                  promoted(registry, artifact=registry / "models" / ".." / "base"),
                  promoted(registry, artifact=escape),
                  promoted(registry, adapter=outside),
                  promoted(registry, artifact="relative/models/v1/weights")):
        assert refusal(verify, value, control_signature(KEY, value)) == "path_outside", value


def test_base_is_this_gateways_own_base_model_whatever_the_event_says(registry):
    value = ModelRolledBack(payload=ModelRolledBackPayload(version="base", artifact_path="/anywhere/at/all",
                                                           adapter_path="/evil", rolled_back_from="v1")).to_bytes()
    ev = verifier(registry)(value, control_signature(KEY, value))
    assert (ev.payload.artifact_path, ev.payload.adapter_path) == (str(registry / "base"), None)


def test_signed_records_that_are_no_swap_are_refused_as_unreadable(registry):
    verify = verifier(registry)
    chat = ChatCompleted(payload=ChatCompletedPayload(completion_id="c", model_version="v1", messages=[],
                                                      choices=[], latency_ms=1)).to_bytes()
    for value in (chat, b"not json"):
        assert refusal(verify, value, control_signature(KEY, value)) == "unreadable"


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, api_version=KAFKA_API_VERSION, acks="all")
    for value, sig in records:
        headers = [(CONTROL_SIG_HEADER, sig)] if sig is not None else []
        producer.send(topic, value=value, headers=headers).get(timeout=30)
    producer.close(timeout=5)


@pytest.mark.integration
def test_the_consumer_applies_only_signed_registry_events_and_counts_the_rest(registry, kafka_bootstrap,
                                                                              kafka_topics):
    good = promoted(registry)
    outside = promoted(registry, version="v7", artifact="/etc")
    forged = promoted(registry, version="v8")
    unsigned = promoted(registry, version="v9")
    # The valid one first: refused events after it must not hide it (only the last of a batch is applied).
    _produce(kafka_bootstrap, kafka_topics["control"],
             [(good, control_signature(KEY, good)), (outside, control_signature(KEY, outside)),
              (forged, control_signature(b"x" * 32, forged)), (unsigned, None)])
    applied, refused = [], []
    done = threading.Event()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def on_event(ev):
        applied.append(ev.payload.version)
        done.set()

    metrics = GatewayMetrics()

    def on_refused(reason):
        metrics.control_refused.labels(reason).inc()
        refused.append(reason)

    consumer = ControlConsumer(kafka_bootstrap, loop, on_event, verifier(registry), on_refused,
                               topic=kafka_topics["control"]).start()
    try:
        assert done.wait(60), "the signed promotion was never applied"
        deadline = time.monotonic() + 30
        while len(refused) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        consumer.stop()
        loop.call_soon_threadsafe(loop.stop)
    assert applied == ["v1"]
    assert sorted(refused) == ["bad_signature", "path_outside", "unsigned"]
    text = metrics.render().decode()
    for reason in refused:
        assert f'tao_control_refused_total{{reason="{reason}"}} 1.0' in text


def _settings(data: Path, **kw) -> GatewaySettings:
    return GatewaySettings(data_dir=data, base_model=data / "base", signing_key=KEY.decode(),
                           vllm_url="http://127.0.0.1:9", **kw)


def test_a_gateway_with_an_empty_control_topic_starts_on_the_registrys_live_version(registry):
    s = _settings(registry)
    metrics = GatewayMetrics()
    assert gateway_swap.live_version(s, metrics) is None  # nothing ever published: the base
    value = promoted(registry, adapter=registry / "models" / "v1" / "adapter")
    write_live(registry, value, control_signature(KEY, value))  # what feedback.registry writes on publishing
    live = gateway_swap.live_version(s, metrics)
    weights = str((registry / "models" / "v1" / "weights").resolve())
    assert gateway_swap.start_on(live, "weights") == ("v1", weights, "tao-served")
    assert gateway_swap.start_on(live, "lora") == (
        "v1", str((registry / "models" / "v1" / "adapter").resolve()), "tao-v1")
    assert metrics.render().decode().count("tao_control_refused_total{") == 0

    rolled = ModelRolledBack(payload=ModelRolledBackPayload(version="base", artifact_path="/x",
                                                            rolled_back_from="v1")).to_bytes()
    write_live(registry, rolled, control_signature(KEY, rolled))
    assert gateway_swap.start_on(gateway_swap.live_version(s, metrics), "weights") is None


def test_a_forged_live_file_is_refused_counted_and_the_gateway_starts_on_the_base(registry):
    s = _settings(registry)
    metrics = GatewayMetrics()
    value = promoted(registry)
    write_live(registry, value, control_signature(b"not the gateways key!", value))
    assert gateway_swap.live_version(s, metrics) is None
    assert 'tao_control_refused_total{reason="bad_signature"} 1.0' in metrics.render().decode()
    with pytest.raises(Refused, match="another key"):
        registry_live(registry, verifier(registry))


def test_the_control_topic_never_expires_with_the_event_retention():
    from deploy.broker import _topic_configs

    events = {"retention.ms": str(30 * 86_400_000)}
    assert _topic_configs("tao.control", events) == {"retention.ms": "-1"}
    assert _topic_configs("tao.control.1a2b3c4d", {}) == {"retention.ms": "-1"}  # the tests' copies
    assert _topic_configs("tao.completions", events) == events
    assert _topic_configs("tao.controlled", events) == events
