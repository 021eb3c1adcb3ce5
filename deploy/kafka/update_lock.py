"""Regenerate deploy/kafka/kafka-lock.json: Kafka's runtime jars with pinned versions and sha256.

Run by a maintainer when moving to another Kafka version (needs Maven):

    python deploy/kafka/update_lock.py 4.1.1

It resolves ``org.apache.kafka:kafka_2.13:<version>`` plus the SLF4J binding with Maven,
checks each jar against the ``.sha1`` Maven Central published for it, and writes the
sha256 of every jar into the lock. ``churnstream kafka up`` then fetches exactly these
artifacts and refuses any whose sha256 differs.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SLF4J_BINDING = "org.apache.logging.log4j:log4j-slf4j-impl:2.24.3"
LOCK_PATH = Path(__file__).with_name("kafka-lock.json")


def _resolve(coords: list[str], workdir: Path) -> list[str]:
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in (c.split(":") for c in coords)
    )
    (workdir / "pom.xml").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>churnstream</groupId><artifactId>kafka-lock</artifactId><version>1</version>"
        f"<dependencies>{deps}</dependencies></project>"
    )
    out = workdir / "deps.txt"
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(workdir / "pom.xml"),
            "dependency:list",
            "-DincludeScope=runtime",
            f"-DoutputFile={out}",
        ],
        check=True,
    )
    resolved = []
    for line in out.read_text().splitlines():
        parts = line.strip().split(":")
        if len(parts) >= 5 and parts[2] == "jar":
            resolved.append(f"{parts[0]}:{parts[1]}:{parts[3]}")
    return sorted(set(resolved))


def main(version: str) -> None:
    repo = Path.home() / ".m2" / "repository"
    with tempfile.TemporaryDirectory() as tmp:
        coords = _resolve([f"org.apache.kafka:kafka_2.13:{version}", SLF4J_BINDING], Path(tmp))
    artifacts = []
    for coord in coords:
        group, artifact, ver = coord.split(":")
        jar = repo / group.replace(".", "/") / artifact / ver / f"{artifact}-{ver}.jar"
        data = jar.read_bytes()
        published_sha1 = jar.with_name(jar.name + ".sha1").read_text().split()[0].strip()
        if hashlib.sha1(data).hexdigest() != published_sha1:
            raise SystemExit(f"{coord}: sha1 differs from the published one")
        artifacts.append(
            {"coords": coord, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        )
    lock = {
        "kafka_version": version,
        "scala_version": "2.13",
        "slf4j_binding": SLF4J_BINDING,
        "artifacts": artifacts,
    }
    LOCK_PATH.write_text(json.dumps(lock, indent=2) + "\n")
    print(f"wrote {LOCK_PATH} with {len(artifacts)} artifacts")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "4.1.1")
