"""The local Kafka launcher's checks that need no running broker."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from streams.errors import KafkaLauncherError
from streams.io import kafka_broker_config, kafka_local


def test_missing_java_is_one_clear_error() -> None:
    with pytest.raises(KafkaLauncherError, match=r"Java not found.*install a Java 17\+"):
        kafka_local.java_major_version("/nonexistent/bin/java")


def test_old_java_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(KafkaLauncherError, match="Java 11 is too old"):
        kafka_local.java_major_version(str(fake))


def test_this_machine_has_java_17_or_newer() -> None:
    assert kafka_local.java_major_version() >= 17


def test_lock_pins_kafka_4_and_an_slf4j_binding() -> None:
    lock = kafka_local.load_lock()
    assert lock["kafka_version"].startswith("4.")
    coords = {artifact["coords"].rsplit(":", 1)[0] for artifact in lock["artifacts"]}
    assert "org.apache.kafka:kafka_2.13" in coords
    assert "org.apache.kafka:kafka-clients" in coords
    assert "org.apache.logging.log4j:log4j-slf4j-impl" in coords
    assert all(len(artifact["sha256"]) == 64 for artifact in lock["artifacts"])


def test_a_jar_whose_checksum_differs_from_the_lock_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = kafka_local.load_lock()
    [real] = [a for a in lock["artifacts"] if a["coords"].startswith("net.sf.jopt-simple:")]
    tampered = {**real, "sha256": "0" * 64}
    monkeypatch.setenv("CHURNSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    fake_lock = {"kafka_version": "test", "artifacts": [tampered]}
    with pytest.raises(KafkaLauncherError, match=r"checksum mismatch for net\.sf\.jopt-simple"):
        kafka_local.fetch_jars(fake_lock)
    assert not list((tmp_path / "cache").rglob("*.jar"))


def test_a_missing_lock_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(KafkaLauncherError, match=r"nope\.json"):
        kafka_local.load_lock(missing)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"artifacts": []}))
    with pytest.raises(KafkaLauncherError, match="no artifacts"):
        kafka_local.load_lock(broken)


def test_server_properties_listen_on_loopback_only(tmp_path: Path) -> None:
    text = kafka_broker_config.server_properties(tmp_path, 19092, 19093)
    listeners = [line for line in text.splitlines() if "listeners=" in line]
    assert listeners
    assert all("127.0.0.1" in line for line in listeners)
    assert "group.initial.rebalance.delay.ms=0" in text
    assert "offsets.topic.replication.factor=1" in text
    assert "transaction.state.log.replication.factor=1" in text
