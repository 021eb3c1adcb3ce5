"""churnstream worker processes for the benchmark: start, watch /metrics, read their state.

A :class:`BenchWorker` is one ``python -m streams worker`` with its own data dir and web
port. Progress comes from ``churnstream_event_to_score_seconds_count``, which the worker
observes once per input event it scored (timer wakes are not counted), so it reaches the
produced count exactly when every valid input record went through decode, state, score,
policy and the sends of its outputs.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from benchkit import Child, Children, Measured, Sample, cpu_seconds, peak_rss_mb
from kafka import KafkaAdminClient, KafkaConsumer

from streams.io.kafka_local import free_port
from streams.settings import INPUT_TOPICS, Settings

MODEL_SECRET: Final[str] = "bench-model-secret-0123456789"
EVENTS_METRIC: Final[str] = "churnstream_event_to_score_seconds_count"
POLL_S: Final[float] = 0.25


def worker_env(broker: str, prefix: str, data_dir: Path, web_port: int) -> dict[str, str]:
    """Return the environment of a worker: the bench's own, minus any CHURNSTREAM_ setting."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHURNSTREAM_")}
    env.update(
        {
            "CHURNSTREAM_BROKER": broker,
            "CHURNSTREAM_TOPIC_PREFIX": prefix,
            "CHURNSTREAM_DATA_DIR": str(data_dir),
            "CHURNSTREAM_WEB_PORT": str(web_port),
            "CHURNSTREAM_MODEL_SECRET": MODEL_SECRET,
        }
    )
    return env


def parse_metrics(text: str) -> dict[str, float]:
    """Return ``{series: value}`` of Prometheus exposition text (labels kept in the name).

    >>> parse_metrics('# HELP x y\\nx_total{a="b"} 3.0\\ny 1')
    {'x_total{a="b"}': 3.0, 'y': 1.0}
    """
    series: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            series[name] = float(value)
        except ValueError:
            continue
    return series


def metric_sum(series: dict[str, float], name: str) -> float:
    """Return the sum of every series of metric ``name`` (any labels)."""
    return sum(v for k, v in series.items() if k == name or k.startswith(name + "{"))


@dataclass(slots=True)
class BenchWorker:
    """One worker process the bench started, and what was read from it."""

    name: str
    child: Child
    web_port: int
    data_dir: Path
    started_s: float = field(default_factory=time.monotonic)
    ready_after_s: float | None = None

    @classmethod
    def start(
        cls, children: Children, name: str, broker: str, prefix: str, data_dir: Path
    ) -> BenchWorker:
        """Start a worker on a free loopback port with an empty (or given) data dir."""
        data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        child = children.start(
            name,
            [sys.executable, "-m", "streams", "worker"],
            data_dir / "worker.log",
            worker_env(broker, prefix, data_dir, port),
        )
        return cls(name, child, port, data_dir)

    def get(self, path: str) -> tuple[int, bytes]:
        """Return (status, body) of GET ``path`` on the worker; (0, b"") if it does not answer."""
        url = f"http://127.0.0.1:{self.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()
        except (OSError, ValueError):
            return 0, b""

    def metrics(self) -> dict[str, float]:
        """Return the worker's /metrics series ({} while it does not answer)."""
        status, body = self.get("/metrics")
        return parse_metrics(body.decode("utf-8", "replace")) if status == 200 else {}

    def events_scored(self) -> int:
        """Return how many input events the worker has scored so far."""
        return int(self.metrics().get(EVENTS_METRIC, 0.0))

    def check_alive(self) -> None:
        """Raise RuntimeError with the log tail if the worker exited."""
        if not self.child.alive():
            msg = f"{self.name} exited:\n{self.child.log_tail()}"
            raise RuntimeError(msg)

    def wait_ready(self, timeout_s: float) -> float:
        """Return seconds from start until /readyz answered 200; raise after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if self.get("/readyz")[0] == 200:
                self.ready_after_s = time.monotonic() - self.started_s
                return self.ready_after_s
            time.sleep(0.1)
        msg = f"{self.name} not ready after {timeout_s:.0f}s:\n{self.child.log_tail()}"
        raise RuntimeError(msg)

    def stop(self, timeout_s: float = 15.0) -> float:
        """Stop the worker (SIGTERM; SIGKILL after ``timeout_s``); return the seconds it took.

        A graceful stop flushes and closes RocksDB; one that needs the SIGKILL is a finding.
        """
        started = time.monotonic()
        self.child.stop(timeout_s=timeout_s)
        return round(time.monotonic() - started, 1)


def watch_throughput(
    name: str,
    workers: Sequence[BenchWorker],
    expected: int,
    cap_s: float,
    broker_pid: int,
    on_tick: Callable[[int], None] | None = None,
) -> Measured:
    """Return the throughput of ``workers`` together until they scored ``expected`` events.

    A sample (wall time, events scored, the workers' CPU from /proc) is taken every
    ``POLL_S``; the window opens at the first sample that sees any event scored and closes
    when the sum reaches ``expected`` or ``cap_s`` after it opened (then it is partial).
    """
    samples: list[Sample] = []
    opened = broker_cpu_first = 0.0
    started = time.monotonic()
    while True:
        for worker in workers:
            worker.check_alive()
        count = sum(worker.events_scored() for worker in workers)
        now = time.monotonic()
        if count > 0:
            cpu = sum(cpu_seconds(worker.child.pid) for worker in workers)
            if not samples:
                opened, broker_cpu_first = now, cpu_seconds(broker_pid)
            samples.append((time.time(), count, cpu))
        if on_tick is not None:
            on_tick(count)
        if count >= expected or (samples and now - opened >= cap_s):
            break
        if not samples and now - started >= cap_s + 60:
            msg = f"{name}: no event scored within {cap_s + 60:.0f}s"
            raise RuntimeError(msg)
        time.sleep(POLL_S)
    return Measured(
        name=name,
        samples=samples,
        complete=count >= expected,
        peak_rss_mb=max(peak_rss_mb(worker.child.pid) for worker in workers),
        broker_cpu_s=cpu_seconds(broker_pid) - broker_cpu_first,
    )


async def _read_changelog(bootstrap: str, topic: str, partitions: set[int]) -> dict[str, bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        left = {tp for tp in assigned if ends[tp] > 0}
        latest: dict[bytes, bytes | None] = {}
        while left:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, records in batches.items():
                for record in records:
                    latest[record.key] = record.value
                if records and records[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return {json.loads(key): value for key, value in latest.items() if value is not None}


def read_customers(settings: Settings) -> dict[str, bytes]:
    """Return ``{customer id: state JSON}``: the last record per key of the customers changelog.

    The changelog, not a worker's RocksDB, is the table's source of truth: it is complete
    even when a worker had to be killed, and it holds every partition once.
    """
    topic = f"{settings.topic_prefix}churnstream-customers-changelog"
    metadata = KafkaConsumer(bootstrap_servers=settings.broker)
    try:
        partitions = metadata.partitions_for_topic(topic) or set()
    finally:
        metadata.close()
    return asyncio.run(_read_changelog(settings.broker, topic, partitions))


# State fields that do not depend on how the worker interleaves its three input topics:
# each is driven by one topic alone, read in offset order. The others (clocks, decayed
# counters, first_seen_s, ...) do: an event read after a later event of another topic is
# folded in at the customer's clock, so two runs over a backlog may differ there.
ORDER_FREE_FIELDS: Final[tuple[str, ...]] = (
    "customer_id",
    "order_count",
    "spend",
    "last_order_id",
    "email_opt_in",
    "sms_opt_in",
    "push_opt_in",
    "chat_opt_in",
    "preferred_channel",
    "timezone",
    "input_offsets",
)


def _order_free(raw: bytes, positions: dict[str, int]) -> list[Any]:
    values = json.loads(raw)["values"]
    return [values[positions[name]] for name in ORDER_FREE_FIELDS if name in positions]


def compare_states(reference: dict[str, bytes], other: dict[str, bytes]) -> dict[str, Any]:
    """Return how the reference customers' states compare with ``other``'s.

    ``identical``: byte-identical state; ``order_free_equal``: equal in every field of
    ``ORDER_FREE_FIELDS`` (what must hold however the worker interleaves its topics).
    """
    from dataclasses import fields

    from streams.core.state import CustomerState

    positions = {spec.name: index for index, spec in enumerate(fields(CustomerState))}
    versions = {json.loads(state)["v"] for state in (*reference.values(), *other.values())}
    identical = order_free_equal = missing = 0
    for customer_id, state in reference.items():
        found = other.get(customer_id)
        if found is None:
            missing += 1
            continue
        identical += state == found
        order_free_equal += _order_free(state, positions) == _order_free(found, positions)
    return {
        "customers": len(reference),
        "missing": missing,
        "unexpected": len(set(other) - set(reference)),
        "identical": identical,
        "order_free_equal": order_free_equal,
        # More than one: the state code changed while the bench ran (compare with care).
        "state_versions": sorted(versions),
    }


def committed_total(settings: Settings, group: str) -> int:
    """Return the sum of the input offsets ``group`` has committed."""
    admin = KafkaAdminClient(bootstrap_servers=settings.broker)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    inputs = {settings.topic(name) for name in INPUT_TOPICS}
    return sum(max(0, meta.offset) for tp, meta in offsets.items() if tp.topic in inputs)


def settle(worker: BenchWorker, idle_share: float = 0.15, timeout_s: float = 20.0) -> float:
    """Return once ``worker`` idles (scored events may still have outputs in flight).

    Idle: under ``idle_share`` of a core over half a second. Returns the seconds waited.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = cpu_seconds(worker.child.pid)
        time.sleep(0.5)
        if cpu_seconds(worker.child.pid) - before < idle_share * 0.5:
            break
    return time.monotonic() - started


def wait_scored(worker: BenchWorker, count: int, timeout_s: float) -> None:
    """Return once ``worker`` scored ``count`` events; raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while worker.events_scored() < count:
        worker.check_alive()
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{worker.name} did not score {count} events in {timeout_s:.0f}s")
        time.sleep(0.1)
