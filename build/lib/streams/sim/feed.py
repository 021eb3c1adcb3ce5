"""The closed loop's input: the ``interventions`` topic read on a thread into a queue.

With ``follow_group`` the same thread also measures how far the worker's consumer group is
behind on the input topics (end offsets minus its committed offsets), so the live runner can
wait for the worker instead of running ahead of it: interventions decided on a stream the
worker reads a minute late would reach simulated customers weeks late.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import Any

from streams.errors import ChurnstreamError, DecodeError
from streams.io.avro import AvroCodec, default_codec
from streams.settings import Settings


class InterventionFeed:
    """Reads the ``interventions`` topic from the beginning on a thread, into a queue."""

    def __init__(
        self,
        settings: Settings,
        codec: AvroCodec | None = None,
        follow_group: str | None = None,
        lag_every_s: float = 0.5,
    ) -> None:
        self.settings = settings
        self.codec = codec or default_codec()
        self.follow_group = follow_group
        self.lag_every_s = lag_every_s
        # Records the followed group has yet to commit on the input topics; None = unknown.
        self.lag: int | None = None
        self.records: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.undecodable = 0
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-interventions", daemon=True)

    def start(self, timeout_s: float = 30.0) -> None:
        """Start reading; return once the consumer is assigned (or raise why it is not)."""
        self._thread.start()
        self._ready.wait(timeout_s)
        if self.error is not None:
            raise self.error
        if not self._ready.is_set():
            topic = self.settings.topic("interventions")
            raise ChurnstreamError(f"no partitions of {topic!r} after {timeout_s:.0f}s")

    def stop(self) -> None:
        """Stop reading and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        from streams.io.kafka_clients import client_config

        topic = self.settings.topic("interventions")
        try:
            consumer = KafkaConsumer(**client_config(self.settings), enable_auto_commit=False)
        except Exception as exc:  # kafka-python raises several unrelated types here
            self.error = ChurnstreamError(f"cannot consume {topic!r}: {exc}")
            self._ready.set()
            return
        probe: _LagProbe | None = None
        try:
            deadline = time.monotonic() + 30
            partitions = consumer.partitions_for_topic(topic)
            while not partitions and time.monotonic() < deadline and not self._stop.is_set():
                time.sleep(0.2)
                partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                self.error = ChurnstreamError(
                    f"topic {topic!r} does not exist: run `churnstream topics create` first"
                )
                self._ready.set()
                return
            assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            consumer.seek_to_beginning(*assigned)
            self._ready.set()
            probe = (
                None if self.follow_group is None else _LagProbe(self.settings, self.follow_group)
            )
            measured = 0.0
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=100).values():
                    for record in records:
                        self._take(record.value)
                if probe is not None and time.monotonic() - measured >= self.lag_every_s:
                    measured = time.monotonic()
                    self.lag = probe.lag()
        finally:
            with contextlib.suppress(Exception):
                consumer.close()
            if probe is not None:
                probe.close()

    def _take(self, value: bytes | None) -> None:
        try:
            _, record = self.codec.decode(value or b"", expected="intervention")
        except DecodeError:
            self.undecodable += 1
            return
        self.records.put(record)


class _LagProbe:
    """Measures a consumer group's lag on the input topics without joining the group."""

    def __init__(self, settings: Settings, group: str) -> None:
        from kafka import KafkaConsumer

        from streams.io.kafka_clients import client_config
        from streams.settings import INPUT_TOPICS

        self.group = group
        self.topics = [settings.topic(name) for name in INPUT_TOPICS]
        # A consumer in the group's name that never subscribes (so never joins or takes
        # partitions from the worker) and never commits: it only reads committed offsets.
        self.consumer = KafkaConsumer(
            **client_config(settings), group_id=group, enable_auto_commit=False
        )
        self.partitions: list[Any] = []

    def lag(self) -> int | None:
        """Return the records the group has not committed yet, None if it cannot tell."""
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        try:
            if not self.partitions:
                for topic in self.topics:
                    for number in sorted(self.consumer.partitions_for_topic(topic) or ()):
                        self.partitions.append(TopicPartition(topic, number))
            ends = self.consumer.end_offsets(self.partitions)
            behind = 0
            for partition in self.partitions:
                committed = self.consumer.committed(partition)
                behind += max(0, ends.get(partition, 0) - (committed or 0))
        except KafkaError:
            return None
        return behind

    def close(self) -> None:
        """Close the probe's consumer (it never committed anything)."""
        with contextlib.suppress(Exception):
            self.consumer.close(autocommit=False)
