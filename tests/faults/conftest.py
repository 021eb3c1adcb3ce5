"""Fixtures of the fault tests: the known stream, its references, and an uninterrupted run."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.core.events import Event
from streams.core.state import CustomerState
from streams.io import kafka_local
from streams.io.kafka_clients import create_topics
from streams.settings import Settings
from tests.faults.harness import PINNED, produce_all, wait_caught_up
from tests.faults.stream import known_stream
from tests.faults.verdict import (
    Outputs,
    changelog_states,
    read_outputs,
    reference_outputs,
    replay_states,
)
from tests.support.processes import WorkerProcess

# Three partitions: the aligned stream puts buyers, browsers and profile-only customers each
# on their own (see tests/faults/harness.py).
PARTITIONS = 3
# Kafka notices a kill -9'd member only when its session times out (Faust's default: 60 s,
# and the restarted worker waits that long to rejoin). Faust reads these from the
# environment; the tests shorten them so a kill costs seconds, not minutes.
FAST_REJOIN: dict[str, str] = {
    "BROKER_SESSION_TIMEOUT": "6",
    "BROKER_HEARTBEAT_INTERVAL": "1",
}


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``faults`` marker (strict markers are on)."""
    config.addinivalue_line("markers", "faults: kills workers or the broker (tests/faults)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this directory ``faults`` (select with ``-m faults``)."""
    for item in items:
        if "tests/faults/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.faults)


@dataclass(frozen=True)
class KnownStream:
    """The input of the fault tests and what a correct run must end with."""

    events: list[Event]
    reference: Outputs  # every score, risk change and training example (per-partition replay)
    replayed: dict[str, CustomerState]  # replay's final states


@pytest.fixture(scope="session")
def known() -> KnownStream:
    """Return the known stream (120 customers, 300 days, ~5,300 events) and its references."""
    events = known_stream(customers=120, days=300, seed=7, partitions=PARTITIONS)
    return KnownStream(events, reference_outputs(events, PARTITIONS), replay_states(events))


@dataclass(frozen=True)
class Baseline:
    """An uninterrupted live run of the known stream: its outputs and final states."""

    settings: Settings
    outputs: Outputs
    states: dict[str, CustomerState]
    data_dir: Path


def make_settings(bootstrap: str, **overrides: object) -> Settings:
    """Return settings with a fresh topic prefix on ``bootstrap``; create the topics."""
    settings = Settings.load(
        {},
        {
            "broker": bootstrap,
            "topic_prefix": f"f{uuid.uuid4().hex[:10]}-",
            "partitions": PARTITIONS,
            **overrides,
        },
    )
    create_topics(settings)
    return settings


@pytest.fixture(scope="session")
def baseline(
    kafka_broker: kafka_local.BrokerInfo,
    known: KnownStream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Baseline:
    """Run the known stream through one worker that is never disturbed (once per session)."""
    settings = make_settings(kafka_broker.bootstrap)
    data_dir = tmp_path_factory.mktemp("baseline")
    produce_all(settings, known.events)
    worker = WorkerProcess(settings, data_dir, **PINNED, **FAST_REJOIN)
    try:
        worker.start().wait_ready()
        wait_caught_up(settings, worker=worker)
    finally:
        worker.stop()
    return Baseline(settings, read_outputs(settings), changelog_states(settings), data_dir)


@pytest.fixture
def fault_settings(kafka_broker: kafka_local.BrokerInfo) -> Callable[..., Settings]:
    """Return a factory of settings with fresh topics (3 partitions) on the session broker."""

    def make(**overrides: object) -> Settings:
        return make_settings(kafka_broker.bootstrap, **overrides)

    return make


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Return a maker of (not yet started) workers; every one is stopped afterwards."""
    made: list[WorkerProcess] = []

    def make(settings: Settings, name: str = "worker", **env: str) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / name, **{**PINNED, **FAST_REJOIN, **env})
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.stop()
