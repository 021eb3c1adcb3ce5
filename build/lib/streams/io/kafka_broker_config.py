"""The local broker's configuration files: ``server.properties`` (KRaft) and log4j2."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Final

from streams.io.kafka_tls import BrokerTls, security_properties

_LOG4J2: Final[str] = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def cluster_id() -> str:
    """Return a new random KRaft cluster id (URL-safe base64 of a UUID, no padding)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def server_properties(
    data_dir: Path, port: int, controller_port: int, tls: BrokerTls | None = None
) -> str:
    """Return the ``server.properties`` text of a single-node broker+controller on loopback.

    With ``tls`` the broker listens with SASL_SSL instead of PLAINTEXT (see ``kafka_tls``).
    """
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.retention.hours": "-1",
        "log.segment.bytes": str(64 * 1024 * 1024),
        "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    if tls is not None:
        settings.update(security_properties(tls, port, controller_port))
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def log4j2_properties(log_path: Path) -> str:
    """Return the broker's ``log4j2.properties`` text: INFO and up into ``log_path``."""
    return _LOG4J2.format(log=log_path)
