"""A local single-node Apache Kafka (KRaft) on 127.0.0.1, fetched from Maven Central, no Docker.

The broker's jars are pinned in ``deploy/kafka/kafka-lock.json`` (coordinates and sha256);
:func:`fetch_jars` resolves exactly those artifacts with Maven into a user cache directory and
refuses any whose sha256 differs, so a second ``up`` needs no network. :func:`broker_up`
formats KRaft storage, starts ``kafka.Kafka`` detached with its log in the data dir, and
returns once the broker answers a metadata request. With a
:class:`~streams.io.kafka_tls.SecurityConfig` the broker listens with SASL_SSL (TLS and
SCRAM-SHA-512 logins) instead of PLAINTEXT; see :mod:`streams.io.kafka_tls`.

This module starts, stops and reports the broker; the parts live beside it and their public
names are re-exported here, so callers keep importing from ``streams.io.kafka_local``:
:mod:`~streams.io.kafka_jars` (lock file, Java check, jar fetch and sha256 checks),
:mod:`~streams.io.kafka_broker_config` (``server.properties`` and log4j2) and
:mod:`~streams.io.kafka_broker_process` (state record, pid checks, probe, ports, signals).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path
from typing import Final

from streams.errors import KafkaLauncherError
from streams.io.kafka_broker_config import cluster_id, log4j2_properties, server_properties
from streams.io.kafka_broker_process import (
    STATE_FILE,
    BrokerInfo,
    broker_answers,
    choose_ports,
    free_port,
    is_broker_process,
    read_state,
    reap,
    signal_pid,
    wait_ready,
    write_state,
)
from streams.io.kafka_jars import (
    LOCK_PATH,
    MIN_JAVA,
    REPO_ROOT,
    cache_dir,
    fetch_jars,
    java_major_version,
    load_lock,
    verify_jars,
)
from streams.io.kafka_tls import SecurityConfig, prepare_tls, scram_format_args

__all__ = [
    "HEAP_OPTS",
    "LOCK_PATH",
    "LOG_FILE",
    "MIN_JAVA",
    "REPO_ROOT",
    "STATE_FILE",
    "BrokerInfo",
    "broker_answers",
    "broker_down",
    "broker_status",
    "broker_up",
    "cache_dir",
    "fetch_jars",
    "free_port",
    "java_major_version",
    "load_lock",
    "read_state",
    "verify_jars",
]

LOG_FILE: Final[str] = "broker.log"
HEAP_OPTS: Final[tuple[str, ...]] = ("-Xms256m", "-Xmx768m", "-XX:+UseG1GC")


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def broker_up(
    data_dir: Path,
    port: int | None = None,
    ready_timeout_s: float = 90.0,
    security: SecurityConfig | None = None,
) -> BrokerInfo:
    """Start the local broker (or return the one already running there) once it answers.

    With ``security`` the broker listens with SASL_SSL only: a certificate made for
    127.0.0.1 (its CA in ``BrokerInfo.ssl_cafile``) and the SCRAM-SHA-512 users of
    ``security``. A broker that died (e.g. killed) is started again on the ports it had, so
    clients that knew its address find it again.
    """
    data_dir = data_dir.resolve()
    current = read_state(data_dir)
    if current is not None and is_broker_process(current.pid):
        if port is not None and port != current.port:
            msg = (
                f"a broker already runs from {data_dir} on port {current.port}, not {port}: "
                "run `churnstream kafka down` first or use another --data-dir"
            )
            raise KafkaLauncherError(msg)
        if wait_ready(current, ready_timeout_s):
            return current
        msg = f"broker pid {current.pid} runs but does not answer; see {current.log_path}"
        raise KafkaLauncherError(msg)
    java_major_version()
    lock = load_lock()
    lib_dir = fetch_jars(lock)
    data_dir.mkdir(parents=True, exist_ok=True)
    broker_port, controller_port = choose_ports(port, current)
    tls = None if security is None else prepare_tls(data_dir / "tls")
    config = data_dir / "server.properties"
    config.write_text(server_properties(data_dir, broker_port, controller_port, tls))
    log_path = data_dir / LOG_FILE
    log4j = data_dir / "log4j2.properties"
    log4j.write_text(log4j2_properties(data_dir / "kafka-server.log"))
    java = [
        "java",
        *HEAP_OPTS,
        f"-Dlog4j2.configurationFile={log4j}",
        "-Djava.awt.headless=true",
        "-cp",
        str(lib_dir / "*"),
    ]
    if not (data_dir / "logs" / "meta.properties").exists():
        users = [] if tls is None or security is None else scram_format_args(tls, security)
        # "=": a random id may start with "-", which would read as an option
        format_args = ["format", f"--cluster-id={cluster_id()}", "-c", str(config), *users]
        formatted = subprocess.run(
            [*java, "kafka.tools.StorageTool", *format_args],
            capture_output=True,
            text=True,
            check=False,
        )
        if formatted.returncode != 0:
            msg = f"formatting KRaft storage failed: {formatted.stderr.strip()[-500:]}"
            raise KafkaLauncherError(msg)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*java, "kafka.Kafka", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the caller's terminal must not kill it half-way
        )
    info = BrokerInfo(
        pid=process.pid,
        port=broker_port,
        controller_port=controller_port,
        data_dir=str(data_dir),
        log_path=str(log_path),
        kafka_version=lock["kafka_version"],
        security_protocol="PLAINTEXT" if tls is None else "SASL_SSL",
        ssl_cafile=None if tls is None else str(tls.ca_file),
    )
    write_state(info)
    probe = {} if tls is None else tls.client_config()
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            msg = f"the broker exited with code {process.returncode}: {_log_tail(log_path)}"
            raise KafkaLauncherError(msg)
        if broker_answers(info.bootstrap, timeout_s=2.0, **probe):
            return info
        time.sleep(0.25)
    broker_down(data_dir)
    msg = f"the broker did not answer within {ready_timeout_s:.0f}s: {_log_tail(log_path)}"
    raise KafkaLauncherError(msg)


def broker_down(data_dir: Path, timeout_s: float = 30.0) -> BrokerInfo | None:
    """Stop the broker recorded in ``data_dir`` by its PID and wait until it is gone."""
    data_dir = data_dir.resolve()
    info = read_state(data_dir)
    if info is None:
        return None
    if is_broker_process(info.pid):
        signal_pid(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while is_broker_process(info.pid) and time.monotonic() < deadline:
            reap(info.pid)
            time.sleep(0.1)
        if is_broker_process(info.pid):
            signal_pid(info.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10.0
            while is_broker_process(info.pid) and time.monotonic() < deadline:
                reap(info.pid)
                time.sleep(0.05)
        reap(info.pid)
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE).unlink()
    return info


def broker_status(data_dir: Path) -> tuple[bool, BrokerInfo | None]:
    """Return (running, info) for the broker recorded in ``data_dir``."""
    info = read_state(data_dir.resolve())
    return (info is not None and is_broker_process(info.pid), info)
