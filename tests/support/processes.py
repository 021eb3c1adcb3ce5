"""Start and stop churnstream worker processes for tests (every process started is stopped)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from streams.io.kafka_clients import client_config
from streams.io.kafka_local import free_port
from streams.settings import INPUT_TOPICS, Settings

MODEL_SECRET = "test-model-secret-0123456789"


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.1) -> Any:
    """Return the first truthy value of ``condition()``; fail naming ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout_s:.0f}s waiting for {what}"
            raise AssertionError(msg)
        time.sleep(poll_s)


def _body(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode("utf-8", "replace")


class WorkerProcess:
    """One `churnstream worker` subprocess with its own data dir, web port and log file."""

    def __init__(self, settings: Settings, data_dir: Path, **env: str) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.web_port = free_port()
        self.log_path = data_dir / "worker.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNSTREAM_")}
        self.env.update(
            {
                "CHURNSTREAM_BROKER": settings.broker,
                "CHURNSTREAM_TOPIC_PREFIX": settings.topic_prefix,
                "CHURNSTREAM_DATA_DIR": str(data_dir),
                "CHURNSTREAM_WEB_PORT": str(self.web_port),
                "CHURNSTREAM_MODEL_SECRET": MODEL_SECRET,
                **env,
            }
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the base URL of the worker's web server."""
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> WorkerProcess:
        """Start the worker process (in its own process group)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the worker's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """Return (status, body) of GET ``path``: parsed JSON, or text if it is not JSON."""
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, _body(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _body(exc.read())

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            msg = f"worker exited with {self.process.returncode}:\n{self.log_tail()}"
            raise AssertionError(msg)
        try:
            status, _ = self.get("/readyz")
        except (OSError, ValueError):
            return False
        return status == 200

    def wait_ready(self, timeout_s: float = 90.0) -> WorkerProcess:
        """Return once /readyz answers 200; fail with the log tail if the worker died."""
        try:
            wait_for(self._ready, timeout_s, f"worker {self.url} to be ready", poll_s=0.25)
        except AssertionError as exc:
            msg = f"{exc}\n{self.log_tail()}"
            raise AssertionError(msg) from None
        return self

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Stop the worker with SIGTERM (SIGKILL after ``timeout_s``); return its exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def kill(self) -> None:
        """Kill the worker's whole process group with SIGKILL and reap it."""
        if self.process is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def consumer_caught_up(settings: Settings, group: str) -> bool:
    """Return whether ``group`` has committed every input record produced so far."""
    return not commit_gaps(settings, group)


def commit_gaps(settings: Settings, group: str) -> dict[str, tuple[int | None, int]]:
    """Return ``{"topic[p]": (committed, end)}`` for every input partition ``group`` lags on."""
    config = client_config(settings)
    admin = KafkaAdminClient(**config)
    consumer = KafkaConsumer(**config)
    try:
        committed = admin.list_group_offsets(group).get(group, {})
        ends: dict[Any, int] = {}
        for name in INPUT_TOPICS:
            topic = settings.topic(name)
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in partitions]
            ends.update(consumer.end_offsets(tps))
        gaps: dict[str, tuple[int | None, int]] = {}
        for tp, end in ends.items():
            if end == 0:
                continue
            meta = committed.get(tp)
            if meta is None or meta.offset < end:
                gaps[f"{tp.topic}[{tp.partition}]"] = (None if meta is None else meta.offset, end)
        return gaps
    finally:
        consumer.close()
        admin.close()


def read_topic(settings: Settings, full_topic: str, timeout_s: float = 2.0) -> Iterator[Any]:
    """Yield every record of ``full_topic`` from the beginning until ``timeout_s`` of quiet."""
    consumer = KafkaConsumer(**client_config(settings), enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(full_topic) or set()
        tps = [TopicPartition(full_topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    yield record
                    if record.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
    finally:
        consumer.close()


class TopicWatcher:
    """Reads a churnstream topic from the beginning, decoding records, as they arrive."""

    def __init__(self, settings: Settings, topic: str) -> None:
        from streams.io.avro import default_codec

        self.codec = default_codec()
        self.full_topic = settings.topic(topic)
        self.consumer = KafkaConsumer(**client_config(settings), enable_auto_commit=False)
        partitions = wait_for(
            lambda: self.consumer.partitions_for_topic(self.full_topic), 30, self.full_topic
        )
        tps = [TopicPartition(self.full_topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.records: list[Any] = []

    def poll(self) -> list[Any]:
        """Read what arrived since the last poll; return every record read so far."""
        for records in self.consumer.poll(timeout_ms=200).values():
            self.records.extend(records)
        return self.records

    def values(self) -> list[dict[str, Any]]:
        """Return the decoded values of every Avro record read so far."""
        return [self.codec.decode(record.value)[1] for record in self.records]

    def wait_until(
        self, predicate: Callable[[list[dict[str, Any]]], Any], timeout_s: float, what: str
    ) -> Any:
        """Poll until ``predicate(decoded values)`` is truthy; return its value."""

        def check() -> Any:
            self.poll()
            return predicate(self.values())

        return wait_for(check, timeout_s, what, poll_s=0.0)

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()
