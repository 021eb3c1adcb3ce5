"""The locked Apache Kafka jars: the lock file, the Java check, fetching with sha256 checks.

The broker's jars are pinned in ``deploy/kafka/kafka-lock.json`` (coordinates and sha256);
:func:`fetch_jars` resolves exactly those artifacts with Maven into a user cache directory and
refuses any whose sha256 differs, so a second ``kafka up`` needs no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Final

from streams.errors import KafkaLauncherError

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[2]
LOCK_PATH: Final[Path] = REPO_ROOT / "deploy" / "kafka" / "kafka-lock.json"
MIN_JAVA: Final[int] = 17


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
