"""A local single-node Apache Kafka (KRaft) on 127.0.0.1, fetched from Maven Central, no Docker.

The broker's jars are pinned in ``deploy/kafka/kafka-lock.json`` (coordinates and sha256);
:func:`fetch_jars` resolves exactly those artifacts with Maven into a user cache directory and
refuses any whose sha256 differs, so a second ``up`` needs no network. :func:`broker_up`
formats KRaft storage, starts ``kafka.Kafka`` detached with its log in the data dir, and
returns once the broker answers a metadata request. With a
:class:`~streams.io.kafka_tls.SecurityConfig` the broker listens with SASL_SSL (TLS and
SCRAM-SHA-512 logins) instead of PLAINTEXT; see :mod:`streams.io.kafka_tls`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from streams.errors import KafkaLauncherError
from streams.io.kafka_tls import (
    BrokerTls,
    SecurityConfig,
    load_tls,
    prepare_tls,
    scram_format_args,
    security_properties,
)

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[2]
LOCK_PATH: Final[Path] = REPO_ROOT / "deploy" / "kafka" / "kafka-lock.json"
MIN_JAVA: Final[int] = 17
STATE_FILE: Final[str] = "broker.json"
LOG_FILE: Final[str] = "broker.log"
HEAP_OPTS: Final[tuple[str, ...]] = ("-Xms256m", "-Xmx768m", "-XX:+UseG1GC")


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


def cache_dir() -> Path:
    """Return the user cache directory for Kafka jars (``$XDG_CACHE_HOME/churnstream``)."""
    override = os.environ.get("CHURNSTREAM_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "churnstream"


def load_lock(path: Path = LOCK_PATH) -> dict[str, Any]:
    """Return the parsed lock file; raise KafkaLauncherError if it is missing or malformed."""
    try:
        lock: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        msg = f"cannot read the Kafka lock file {path}: {exc}"
        raise KafkaLauncherError(msg) from exc
    if not lock.get("artifacts") or not lock.get("kafka_version"):
        msg = f"Kafka lock file {path} has no artifacts or no kafka_version"
        raise KafkaLauncherError(msg)
    return lock


def java_major_version(java: str = "java") -> int:
    """Return the major version of ``java``; raise KafkaLauncherError if it is missing or < 17."""
    install = f"install a Java {MIN_JAVA}+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)"
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        msg = f"Java not found ({exc.__class__.__name__}): {install}"
        raise KafkaLauncherError(msg) from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if not match:
        msg = f"cannot tell the Java version from {done.stderr.strip()!r}: {install}"
        raise KafkaLauncherError(msg)
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        msg = f"Java {major} is too old for Kafka 4: {install}"
        raise KafkaLauncherError(msg)
    return major


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _jar_name(coords: str) -> str:
    group, artifact, version = coords.split(":")
    return f"{group}.{artifact}-{version}.jar"


def _missing(lock: dict[str, Any], lib_dir: Path) -> list[dict[str, Any]]:
    missing = []
    for artifact in lock["artifacts"]:
        jar = lib_dir / _jar_name(artifact["coords"])
        if not jar.is_file() or jar.stat().st_size != artifact["size"]:
            missing.append(artifact)
    return missing


def _maven_fetch(artifacts: list[dict[str, Any]], into: Path) -> None:
    """Copy exactly ``artifacts`` (no transitive ones) into ``into`` with Maven."""
    mvn = shutil.which("mvn")
    if mvn is None:
        msg = (
            "the Kafka jars are not cached yet and Maven (`mvn`) is not installed to fetch them "
            "from Maven Central: install Maven (e.g. `apt-get install maven`)"
        )
        raise KafkaLauncherError(msg)
    no_transitive = (
        "<exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId>"
        "</exclusion></exclusions>"
    )
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version>"
        f"{no_transitive}</dependency>"
        for g, a, v in (artifact["coords"].split(":") for artifact in artifacts)
    )
    with tempfile.TemporaryDirectory() as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(
            '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
            "<groupId>churnstream</groupId><artifactId>kafka-fetch</artifactId>"
            f"<version>1</version><dependencies>{deps}</dependencies></project>"
        )
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={into}",
            "-Dmdep.prependGroupId=true",
            "-DincludeScope=runtime",
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        msg = f"Maven could not fetch the Kafka jars: {' | '.join(tail)}"
        raise KafkaLauncherError(msg)


def fetch_jars(lock: dict[str, Any] | None = None) -> Path:
    """Return the directory holding every locked jar, fetching missing ones and checking sha256.

    Raises KafkaLauncherError naming the artifact whose checksum differs from the lock.
    """
    lock = lock or load_lock()
    lib_dir = cache_dir() / "kafka" / str(lock["kafka_version"]) / "libs"
    missing = _missing(lock, lib_dir)
    if missing:
        cache_dir().mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="kafka-fetch-", dir=cache_dir()))
        try:
            _maven_fetch(missing, staging)
            lib_dir.mkdir(parents=True, exist_ok=True)
            for artifact in missing:
                name = _jar_name(artifact["coords"])
                fetched = staging / name
                if not fetched.is_file():
                    msg = f"Maven did not deliver {artifact['coords']} (expected {name})"
                    raise KafkaLauncherError(msg)
                actual = _sha256(fetched)
                if actual != artifact["sha256"]:
                    msg = (
                        f"checksum mismatch for {artifact['coords']}: sha256 {actual} but the "
                        f"lock says {artifact['sha256']}; refusing to run it"
                    )
                    raise KafkaLauncherError(msg)
                os.replace(fetched, lib_dir / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return lib_dir


def verify_jars(lock: dict[str, Any], lib_dir: Path) -> None:
    """Check every cached jar's sha256 against the lock; raise KafkaLauncherError on a mismatch."""
    for artifact in lock["artifacts"]:
        jar = lib_dir / _jar_name(artifact["coords"])
        if _sha256(jar) != artifact["sha256"]:
            msg = f"cached jar {jar} does not match the lock's sha256: delete it and retry"
            raise KafkaLauncherError(msg)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _server_properties(
    data_dir: Path, port: int, controller_port: int, tls: BrokerTls | None = None
) -> str:
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


_LOG4J2 = """\
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


def read_state(data_dir: Path) -> BrokerInfo | None:
    """Return the broker recorded in ``data_dir``, or None if there is no readable record."""
    try:
        raw = json.loads((data_dir / STATE_FILE).read_text())
        return BrokerInfo(**raw)
    except (OSError, ValueError, TypeError):
        return None


def _is_broker_process(pid: int) -> bool:
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
    if current is not None and _is_broker_process(current.pid):
        if port is not None and port != current.port:
            msg = (
                f"a broker already runs from {data_dir} on port {current.port}, not {port}: "
                "run `churnstream kafka down` first or use another --data-dir"
            )
            raise KafkaLauncherError(msg)
        if _wait_ready(current, ready_timeout_s):
            return current
        msg = f"broker pid {current.pid} runs but does not answer; see {current.log_path}"
        raise KafkaLauncherError(msg)
    java_major_version()
    lock = load_lock()
    lib_dir = fetch_jars(lock)
    data_dir.mkdir(parents=True, exist_ok=True)
    broker_port, controller_port = _ports(port, current)
    tls = None if security is None else prepare_tls(data_dir / "tls")
    config = data_dir / "server.properties"
    config.write_text(_server_properties(data_dir, broker_port, controller_port, tls))
    log_path = data_dir / LOG_FILE
    log4j = data_dir / "log4j2.properties"
    log4j.write_text(_LOG4J2.format(log=data_dir / "kafka-server.log"))
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
        format_args = ["format", f"--cluster-id={_cluster_id()}", "-c", str(config), *users]
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
    (data_dir / STATE_FILE).write_text(json.dumps(asdict(info)))
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


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ports(port: int | None, previous: BrokerInfo | None) -> tuple[int, int]:
    """Return (broker port, controller port): ``port``, else the dead broker's, else free."""
    broker_port = port
    controller_port = None
    if previous is not None:
        if broker_port is None and _port_free(previous.port):
            broker_port = previous.port
        if previous.controller_port != broker_port and _port_free(previous.controller_port):
            controller_port = previous.controller_port
    broker_port = broker_port or free_port()
    while controller_port is None or controller_port == broker_port:
        controller_port = free_port()
    return broker_port, controller_port


def _wait_ready(info: BrokerInfo, timeout_s: float) -> bool:
    tls = load_tls(Path(info.data_dir) / "tls") if info.security_protocol != "PLAINTEXT" else None
    probe = {} if tls is None else tls.client_config()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if broker_answers(info.bootstrap, timeout_s=2.0, **probe):
            return True
        if not _is_broker_process(info.pid):
            return False
        time.sleep(0.25)
    return False


def broker_down(data_dir: Path, timeout_s: float = 30.0) -> BrokerInfo | None:
    """Stop the broker recorded in ``data_dir`` by its PID and wait until it is gone."""
    data_dir = data_dir.resolve()
    info = read_state(data_dir)
    if info is None:
        return None
    if _is_broker_process(info.pid):
        _signal(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _is_broker_process(info.pid) and time.monotonic() < deadline:
            _reap(info.pid)
            time.sleep(0.1)
        if _is_broker_process(info.pid):
            _signal(info.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10.0
            while _is_broker_process(info.pid) and time.monotonic() < deadline:
                _reap(info.pid)
                time.sleep(0.05)
        _reap(info.pid)
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE).unlink()
    return info


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def broker_status(data_dir: Path) -> tuple[bool, BrokerInfo | None]:
    """Return (running, info) for the broker recorded in ``data_dir``."""
    info = read_state(data_dir.resolve())
    return (info is not None and _is_broker_process(info.pid), info)
