"""Shared fixtures: the project's own local Kafka broker (session-wide) and unique topics."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.io import kafka_local
from streams.io.kafka_clients import create_topics
from streams.settings import Settings
from tests.support.processes import WorkerProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_local.BrokerInfo]:
    """Start the project's local Apache Kafka once per session; always stop it."""
    data_dir = tmp_path_factory.mktemp("kafka")
    try:
        info = kafka_local.broker_up(data_dir)
    except Exception:
        kafka_local.broker_down(data_dir)
        raise
    try:
        yield info
    finally:
        kafka_local.broker_down(data_dir)


@pytest.fixture
def topic_settings(
    kafka_broker: kafka_local.BrokerInfo,
) -> Callable[..., Settings]:
    """Return a factory of Settings whose topics carry a unique prefix and already exist."""

    def make(partitions: int = 2, **overrides: object) -> Settings:
        prefix = f"t{uuid.uuid4().hex[:10]}-"
        settings = Settings.load(
            {},
            {
                "broker": kafka_broker.bootstrap,
                "topic_prefix": prefix,
                "partitions": partitions,
                **overrides,
            },
        )
        create_topics(settings)
        return settings

    return make


@pytest.fixture
def cli_env(kafka_broker: kafka_local.BrokerInfo) -> dict[str, str]:
    """Return an environment for `churnstream` subprocesses pointed at the session broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNSTREAM_")}
    env["CHURNSTREAM_BROKER"] = kafka_broker.bootstrap
    env["CHURNSTREAM_TOPIC_PREFIX"] = f"t{uuid.uuid4().hex[:10]}-"
    return env


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the broker as `kafka` (so `-m 'not kafka'` selects unit tests)."""
    for item in items:
        if "kafka_broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Return a starter of worker processes; every worker started is stopped afterwards."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, ready: bool = True, **env: str) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker{len(started)}", **env)
        started.append(worker)
        worker.start()
        return worker.wait_ready() if ready else worker

    yield start
    for worker in started:
        worker.stop()
