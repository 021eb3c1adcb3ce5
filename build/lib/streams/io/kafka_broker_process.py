"""A local broker's process: its state record, pid checks, readiness probe, ports, signals.

:func:`streams.io.kafka_local.broker_up` records the broker it started in ``broker.json`` in
the data dir (:func:`write_state`); ``status`` and ``down`` find it again with
:func:`read_state` and check that the recorded pid still is a Kafka broker, not a recycled pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from streams.io.kafka_tls import load_tls

STATE_FILE: Final[str] = "broker.json"


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """What ``kafka up`` started: enough for ``status`` and ``down`` to find it again."""

    pid: int
    port: int
    controller_port: int
    data_dir: str
    log_path: str
    kafka_version: str
    security_protocol: str = "PLAINTEXT"
    ssl_cafile: str | None = None  # the CA certificate (PEM) clients trust, when secured

    @property
    def bootstrap(self) -> str:
        """Return the bootstrap address clients connect to."""
        return f"127.0.0.1:{self.port}"


def read_state(data_dir: Path) -> BrokerInfo | None:
    """Return the broker recorded in ``data_dir``, or None if there is no readable record."""
    try:
        raw = json.loads((data_dir / STATE_FILE).read_text())
        return BrokerInfo(**raw)
    except (OSError, ValueError, TypeError):
        return None


def write_state(info: BrokerInfo) -> None:
    """Record ``info`` in its data dir, for ``status`` and ``down`` to find the broker again."""
    (Path(info.data_dir) / STATE_FILE).write_text(json.dumps(asdict(info)))


def is_broker_process(pid: int) -> bool:
    """Return whether ``pid`` is alive and is a Kafka broker (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie is stopped, merely unreaped
        return False
    return b"kafka.Kafka" in cmdline


def broker_answers(bootstrap: str, timeout_s: float = 5.0, **client: Any) -> bool:
    """Return whether a broker at ``bootstrap`` answers a metadata request.

    ``client`` holds extra kafka-python settings, e.g. the login of a secured broker.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    timeout_ms = int(timeout_s * 1000)
    if "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG:
        # kafka-python 3 waits up to 30 s for a first answer otherwise: a probe of a broker
        # that is still starting would block that long after the broker became ready.
        client = {"bootstrap_timeout_ms": timeout_ms, **client}
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **client
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.describe_cluster()
        return True
    except (KafkaError, OSError, ValueError):
        return False
    finally:
        with contextlib.suppress(Exception):
            admin.close()


def wait_ready(info: BrokerInfo, timeout_s: float) -> bool:
    """Return whether the broker ``info`` answers within ``timeout_s`` (False once it died)."""
    tls = load_tls(Path(info.data_dir) / "tls") if info.security_protocol != "PLAINTEXT" else None
    probe = {} if tls is None else tls.client_config()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if broker_answers(info.bootstrap, timeout_s=2.0, **probe):
            return True
        if not is_broker_process(info.pid):
            return False
        time.sleep(0.25)
    return False


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_free(port: int) -> bool:
    """Return whether ``port`` on 127.0.0.1 can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def choose_ports(port: int | None, previous: BrokerInfo | None) -> tuple[int, int]:
    """Return (broker port, controller port): ``port``, else the dead broker's, else free."""
    broker_port = port
    controller_port = None
    if previous is not None:
        if broker_port is None and port_free(previous.port):
            broker_port = previous.port
        if previous.controller_port != broker_port and port_free(previous.controller_port):
            controller_port = previous.controller_port
    broker_port = broker_port or free_port()
    while controller_port is None or controller_port == broker_port:
        controller_port = free_port()
    return broker_port, controller_port


def signal_pid(pid: int, signum: signal.Signals) -> None:
    """Send ``signum`` to ``pid``; a process that is already gone is no error."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
