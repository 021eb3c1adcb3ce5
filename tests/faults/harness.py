"""Tools of the fault tests that act on processes: produce, watch progress, kill, restart.

The known stream is in :mod:`tests.faults.stream`, the verdicts (outputs and states against
the references) in :mod:`tests.faults.verdict`.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from streams.core.events import Event
from streams.io.avro import default_codec
from streams.io.kafka_clients import client_config, producer
from streams.settings import INPUT_TOPICS, Settings
from tests.support.processes import WorkerProcess, commit_gaps, consumer_caught_up, wait_for

PINNED: dict[str, str] = {"CHURNSTREAM_TRAIN": "false"}


# --- producing ----------------------------------------------------------------------------


class StreamFeeder:
    """Produces events in order from a background thread, at about ``rate_per_s``."""

    def __init__(self, settings: Settings, events: Sequence[Event], rate_per_s: float) -> None:
        self.settings = settings
        self.events = events
        self.rate_per_s = rate_per_s
        self.sent = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="stream-feeder", daemon=True)

    def start(self) -> StreamFeeder:
        """Start producing."""
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        """Return whether every event was produced (and flushed)."""
        return not self._thread.is_alive()

    def join(self, timeout_s: float = 120.0) -> None:
        """Wait until every event is produced; re-raise what the producer thread raised."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            msg = f"the feeder did not finish within {timeout_s:.0f}s ({self.sent} sent)"
            raise AssertionError(msg)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        codec = default_codec()
        client = producer(self.settings)
        began = time.monotonic()
        try:
            for event in self.events:
                topic, value = codec.encode_event(event)
                client.send(self.settings.topic(topic), key=event.customer_id.encode(), value=value)
                self.sent += 1
                # Pace in small bursts: a flush every 50 events keeps the rate even.
                if self.sent % 50 == 0:
                    client.flush(timeout=60)
                    ahead_s = self.sent / self.rate_per_s - (time.monotonic() - began)
                    if ahead_s > 0:
                        time.sleep(ahead_s)
            client.flush(timeout=60)
        except BaseException as exc:  # handed to join()
            self.error = exc
        finally:
            client.close(timeout=10)


def produce_all(settings: Settings, events: Iterable[Event]) -> int:
    """Produce ``events`` in order and flush; return how many were sent."""
    feeder = StreamFeeder(settings, list(events), rate_per_s=1e9).start()
    feeder.join()
    return feeder.sent


# --- watching progress ----------------------------------------------------------------------


class EndOffsets:
    """Reads the end offsets (records written so far) of some topics with one consumer."""

    def __init__(self, settings: Settings, topics: Iterable[str]) -> None:
        self.consumer = KafkaConsumer(**client_config(settings), enable_auto_commit=False)
        self.partitions: list[TopicPartition] = []
        for name in topics:
            full = settings.topic(name)

            def partitions(full: str = full) -> set[int] | None:
                found: set[int] | None = self.consumer.partitions_for_topic(full)
                return found

            self.partitions += [
                TopicPartition(full, p) for p in sorted(wait_for(partitions, 30, full))
            ]

    def total(self) -> int:
        """Return the number of records in the topics now."""
        return int(sum(self.consumer.end_offsets(self.partitions).values()))

    def by_partition(self) -> dict[TopicPartition, int]:
        """Return each partition's end offset now."""
        return dict(self.consumer.end_offsets(self.partitions))

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()


def group_of(settings: Settings) -> str:
    """Return the Faust consumer group of the worker on ``settings``."""
    return f"{settings.topic_prefix}churnstream"


def wait_caught_up(
    settings: Settings, timeout_s: float = 120.0, worker: WorkerProcess | None = None
) -> None:
    """Wait until the worker group has committed every input record produced so far.

    On a timeout the error names each lagging partition (committed, end) and, given the
    ``worker``, ends with its log's tail.
    """
    try:
        wait_for(
            lambda: consumer_caught_up(settings, group_of(settings)),
            timeout_s,
            "the worker to commit every input record",
            poll_s=0.5,
        )
    except AssertionError as exc:
        gaps = commit_gaps(settings, group_of(settings))
        tail = "" if worker is None else f"\nworker log:\n{worker.log_tail(80)}"
        msg = f"{exc}; (committed, end) where behind: {gaps}{tail}"
        raise AssertionError(msg) from None


def wait_progress(
    probe: EndOffsets, above: int, timeout_s: float, worker: WorkerProcess, what: str
) -> int:
    """Wait until ``probe`` counts more than ``above`` records; return the count."""

    def grown() -> int:
        assert worker.process is not None
        if worker.process.poll() is not None:
            msg = f"worker exited with {worker.process.returncode}:\n{worker.log_tail()}"
            raise AssertionError(msg)
        total = probe.total()
        return total if total > above else 0

    try:
        return int(wait_for(grown, timeout_s, what, poll_s=0.05))
    except AssertionError as exc:
        msg = f"{exc}\n{worker.log_tail()}"
        raise AssertionError(msg) from None


@dataclass
class KillLog:
    """What a kill schedule did, for the report."""

    kills: int = 0
    kills_mid_stream: int = 0  # kills while the feeder was still producing
    outputs_at_kill: list[int] = field(default_factory=list)
    restart_to_ready_s: list[float] = field(default_factory=list)


def kill_and_restart(
    worker: WorkerProcess,
    probe: EndOffsets,
    kills: int,
    rng: random.Random,
    log: KillLog,
    feeder: StreamFeeder | None = None,
    min_new_outputs: int = 20,
) -> None:
    """Kill -9 ``worker`` ``kills`` times, each once it wrote new outputs, restarting it after.

    Each round waits until the worker has written at least ``min_new_outputs`` more output
    records than when the round began (or, once ``feeder`` has sent everything, goes on
    without), so kills land while records flow; then a seeded random 0-300 ms more, so they
    hit different points of the commit cycle.
    """
    for round_number in range(kills):
        seen = probe.total()

        def ready_to_kill(seen: int = seen) -> bool:
            if worker.process is not None and worker.process.poll() is not None:
                msg = f"worker exited with {worker.process.returncode}:\n{worker.log_tail()}"
                raise AssertionError(msg)
            return probe.total() >= seen + min_new_outputs or (feeder is not None and feeder.done)

        wait_for(ready_to_kill, 90, f"new outputs before kill {round_number + 1}", poll_s=0.05)
        time.sleep(rng.uniform(0.0, 0.3))  # jitter of the kill point, not synchronisation
        mid_stream = feeder is None or not feeder.done
        worker.kill()
        log.kills += 1
        log.kills_mid_stream += int(mid_stream)
        log.outputs_at_kill.append(probe.total())
        began = time.monotonic()
        worker.start()
        worker.wait_ready(timeout_s=120)
        log.restart_to_ready_s.append(time.monotonic() - began)


def report(name: str, numbers: dict[str, Any]) -> None:
    """Print one JSON line of a fault test's numbers (shown by ``pytest -s`` or ``-rA``)."""
    print(f"FAULT-REPORT {name} {json.dumps(numbers, sort_keys=True, default=str)}")


def iter_chunks(items: Sequence[Any], parts: int) -> Iterator[Sequence[Any]]:
    """Yield ``items`` in ``parts`` consecutive chunks of near-equal size."""
    size = -(-len(items) // parts)
    for begin in range(0, len(items), size):
        yield items[begin : begin + size]


def committed_offsets(settings: Settings) -> dict[TopicPartition, int]:
    """Return the worker group's committed offset of every input partition (0 if none)."""
    from kafka import KafkaAdminClient

    config = client_config(settings)
    admin = KafkaAdminClient(**config)
    probe = EndOffsets(settings, INPUT_TOPICS)
    try:
        group = group_of(settings)
        found = admin.list_group_offsets(group).get(group, {})
        return {tp: (found[tp].offset if tp in found else 0) for tp in probe.partitions}
    finally:
        probe.close()
        admin.close()


def wait_every_partition_advances(settings: Settings, timeout_s: float, what: str) -> list[str]:
    """Wait until every input partition with unprocessed records has its commit move on.

    Returns the partitions that had a backlog (``topic/partition``); fails naming the ones
    whose committed offset stood still: a starved partition.
    """
    probe = EndOffsets(settings, INPUT_TOPICS)
    try:
        ends = probe.by_partition()
    finally:
        probe.close()
    start = committed_offsets(settings)
    backlog = {tp for tp, end in ends.items() if end > start[tp]}
    waiting = set(backlog)

    def advanced() -> bool:
        now = committed_offsets(settings)
        waiting.difference_update({tp for tp in waiting if now[tp] > start[tp]})
        return not waiting

    try:
        wait_for(advanced, timeout_s, what, poll_s=0.3)
    except AssertionError as exc:
        starved = sorted(f"{tp.topic}/{tp.partition}" for tp in waiting)
        msg = f"{exc}: starved partitions {starved}"
        raise AssertionError(msg) from None
    return sorted(f"{tp.topic}/{tp.partition}" for tp in backlog)


def metric_sum(exposition: str, name: str) -> float:
    """Return the sum of every sample of metric ``name`` in a Prometheus text exposition."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in {"{", " "}:
            total += float(line.rsplit(" ", 1)[1])
    return total


def read_rocksdb(worker_data_dir: Path) -> dict[str, dict[bytes, bytes]]:
    """Return every table's key/value pairs from a stopped worker's local RocksDB files.

    Keys are ``table-partition`` (e.g. ``customers-0``); Faust's own bookkeeping keys (the
    persisted changelog offset) are left out: they say where reading stopped, not state.
    """
    from rocksdict import AccessType, Rdict

    found: dict[str, dict[bytes, bytes]] = {}
    for path in sorted((worker_data_dir / "worker").rglob("*.db")):
        db = Rdict(str(path), access_type=AccessType.read_only())
        try:
            # raw mode (Faust's): keys and values are bytes
            rows: dict[bytes, bytes] = {key: value for key, value in db.items()}  # type: ignore[misc] # rocksdict types rows as any Python value
            found[path.name.removesuffix(".db")] = {
                key: value for key, value in rows.items() if not key.startswith(b"__faust")
            }
        finally:
            db.close()
    return found
