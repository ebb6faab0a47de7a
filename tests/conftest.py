"""Shared fixtures: a real Tansu broker for the whole session, fresh topics per test."""
from __future__ import annotations

import uuid

import pytest

from deploy.broker import TOPIC_PARTITIONS, create_topics, running_tansu
from schemas.events import TOPICS


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    """A Tansu broker on a free loopback port with the tao topics; stopped at session end."""
    with running_tansu(str(tmp_path_factory.mktemp("tansu") / "tansu.log")) as bootstrap:
        yield bootstrap


@pytest.fixture
def kafka_topics(kafka_bootstrap) -> dict[str, str]:
    """Uniquely named copies of the tao topics, keyed like schemas.events.TOPICS, so tests
    sharing the session broker never see each other's records."""
    suffix = uuid.uuid4().hex[:8]
    names = {key: f"{topic}.{suffix}" for key, topic in TOPICS.items()}
    create_topics(kafka_bootstrap, {names[key]: TOPIC_PARTITIONS[topic] for key, topic in TOPICS.items()})
    return names


@pytest.fixture(scope="session")
def gate_cache(tmp_path_factory):
    """One probe-answer cache for every test that gates (TAO_GATE_CACHE_DIR): the base model
    answers the probe suite once per session, not once per data dir (about a minute each)."""
    return tmp_path_factory.mktemp("gate_cache")
