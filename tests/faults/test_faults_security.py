"""Kafka over SASL_SSL with SCRAM-SHA-512, against the local broker started with TLS.

The broker (its own, module-scoped) gets a throw-away CA and certificate made in the test
(``keytool``) and one SCRAM user; everything connects through ``CHURNSTREAM_KAFKA_*``
settings only: the CLI's clients (topics, produce, tail) and a live worker. A wrong password
must be a clear error within seconds, not a hang.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.io import kafka_local
from streams.io.kafka_clients import (
    KafkaAuthenticationError,
    create_topics,
    iter_topic,
    produce_events,
)
from streams.io.kafka_tls import SecurityConfig
from streams.settings import Settings
from tests.faults.conftest import FAST_REJOIN
from tests.faults.harness import PINNED
from tests.faults.stream import known_stream
from tests.support.processes import WorkerProcess

USER, PASSWORD = "churnstream-app", "scram-secret-0123456789"
# Refused logins must fail fast: well under kafka-python's 30 s bootstrap timeout.
FAIL_FAST_S = 10.0


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_local.BrokerInfo]:
    """Start a SASL_SSL-only broker with one SCRAM user; always stop it."""
    data_dir = tmp_path_factory.mktemp("secure-kafka")
    try:
        yield kafka_local.broker_up(data_dir, security=SecurityConfig(users={USER: PASSWORD}))
    finally:
        kafka_local.broker_down(data_dir)


def _env(broker: kafka_local.BrokerInfo, password: str = PASSWORD) -> dict[str, str]:
    assert broker.ssl_cafile is not None
    return {
        "CHURNSTREAM_BROKER": broker.bootstrap,
        "CHURNSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CHURNSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "CHURNSTREAM_KAFKA_SASL_USERNAME": USER,
        "CHURNSTREAM_KAFKA_SASL_PASSWORD": password,
        "CHURNSTREAM_KAFKA_SSL_CAFILE": broker.ssl_cafile,
    }


def _settings(broker: kafka_local.BrokerInfo, password: str = PASSWORD) -> Settings:
    env = {**_env(broker, password), "CHURNSTREAM_TOPIC_PREFIX": f"s{uuid.uuid4().hex[:8]}-"}
    return Settings.load(env)


def test_the_secure_broker_refuses_plaintext(secure_broker: kafka_local.BrokerInfo) -> None:
    assert secure_broker.security_protocol == "SASL_SSL"
    assert not kafka_local.broker_answers(secure_broker.bootstrap, timeout_s=3.0)
    server_properties = Path(secure_broker.data_dir, "server.properties").read_text()
    assert "PLAINTEXT://" not in server_properties.split("listeners=", 1)[1].splitlines()[0]


def test_cli_clients_work_over_sasl_ssl_with_scram(secure_broker: kafka_local.BrokerInfo) -> None:
    settings = _settings(secure_broker)
    assert settings.topic("orders") in create_topics(settings)
    events = known_stream(customers=6, days=30, seed=3, partitions=None)
    sent = produce_events(settings, events)
    read = list(iter_topic(settings, "orders", from_beginning=True, timeout_s=1.5))
    assert len(read) == sent["orders"] > 0
    assert {record["value"]["customer_id"] for record in read} <= {e.customer_id for e in events}


def test_a_worker_scores_over_sasl_ssl_configured_by_settings_alone(
    secure_broker: kafka_local.BrokerInfo, tmp_path: Path
) -> None:
    settings = _settings(secure_broker)
    create_topics(settings)
    events = known_stream(customers=6, days=30, seed=4, partitions=None)
    produce_events(settings, events)
    worker = WorkerProcess(
        settings, tmp_path / "worker", **PINNED, **FAST_REJOIN, **_env(secure_broker)
    )
    try:
        worker.start().wait_ready()
        scored = {
            record["value"]["customer_id"]
            for record in iter_topic(settings, "churn-scores", from_beginning=True, timeout_s=5.0)
        }
    finally:
        worker.stop()
    assert scored == {event.customer_id for event in events}


def test_a_wrong_password_is_a_clear_error_within_seconds(
    secure_broker: kafka_local.BrokerInfo,
) -> None:
    settings = _settings(secure_broker, password="not-the-password-123")
    began = time.monotonic()
    with pytest.raises(KafkaAuthenticationError, match=r"refused the SCRAM-SHA-512 login") as err:
        create_topics(settings)
    assert time.monotonic() - began < FAIL_FAST_S
    assert "CHURNSTREAM_KAFKA_SASL_PASSWORD" in str(err.value)
    assert "not-the-password" not in str(err.value)


def test_the_cli_says_the_login_was_refused_in_one_line(
    secure_broker: kafka_local.BrokerInfo,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNSTREAM_")}
    env.update(_env(secure_broker, password="not-the-password-123"))
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streams", "topics", "create"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert time.monotonic() - began < FAIL_FAST_S + 5
    errors = [line for line in done.stderr.splitlines() if "churnstream: error:" in line]
    assert len(errors) == 1, done.stderr[-2000:]
    assert "refused the SCRAM-SHA-512 login" in errors[0]


def test_a_worker_with_a_wrong_password_stops_with_a_clear_error(
    secure_broker: kafka_local.BrokerInfo, tmp_path: Path
) -> None:
    settings = _settings(secure_broker)
    create_topics(settings)
    worker = WorkerProcess(
        settings, tmp_path / "worker", **PINNED, **_env(secure_broker, "not-the-password-123")
    )
    began = time.monotonic()
    worker.start()
    assert worker.process is not None
    try:
        code = worker.process.wait(timeout=FAIL_FAST_S + 10)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        worker.stop()
    took_s = time.monotonic() - began
    log = worker.log_path.read_text(errors="replace")
    assert code not in (None, 0), f"still running after {took_s:.0f}s:\n{log[-1500:]}"
    assert "refused the SCRAM-SHA-512 login" in log, log[-1500:]
    assert took_s < FAIL_FAST_S + 10
