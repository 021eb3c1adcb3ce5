"""Latency at half load: input record sent -> the risk change it caused, as a consumer sees it.

While a caught-up worker runs, :func:`half_load` sends pre-encoded input records at a fixed
rate (a token bucket, half of the worker's measured capacity) and reads ``risk-changes`` in
the same event loop. A risk change caused by an event carries that event's customer and
event time (``as_of``; ``trigger`` is the event type), which identifies the input record:

    latency = (wall time the bench's consumer received the risk change)
            - (wall time just before the bench's producer was handed the input record)

So it includes the producer's send, the broker, the worker's fetch, decode, state, score,
policy and send, the broker again and the consumer's fetch: the delay a downstream
consumer of ``risk-changes`` sees. Records sent in the first ``warmup_s`` are left out.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from benchkit import percentile
from inputs import Record, partition_of

from streams.io.avro import default_codec
from streams.settings import Settings

EVENT_TRIGGERS = frozenset({"click", "order", "profile"})
# The sender's shortest sleep: records falling due meanwhile are sent together after it.
SEND_TICK_S = 0.001


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """What the half-load run measured (milliseconds)."""

    rate_per_s: float
    sent: int
    duration_s: float
    samples: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    unmatched_risk_changes: int
    # p50 of the records sent in each 5-second slice: a rising line means the worker does
    # not keep up with the rate (records queue), a flat one that it does.
    p50_ms_by_5s: list[float | None]
    samples_by_5s: list[int]
    # The two legs of each latency, split at the risk change's record timestamp (the wall
    # time the worker appended it to a produce batch): "in" is the bench's send, the broker,
    # the worker's fetch and work; "out" the worker's produce request, the broker and the
    # bench consumer's fetch. Each as (p50, p99).
    in_leg_ms: tuple[float | None, float | None]
    out_leg_ms: tuple[float | None, float | None]


async def _consume(
    consumer: AIOKafkaConsumer,
    sent_at: dict[tuple[str, int], float],
    latencies_ms: list[tuple[float, float]],
    legs_ms: list[tuple[float, float]],
    stop: asyncio.Event,
    warmup_until: float,
) -> int:
    codec = default_codec()
    unmatched = 0
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=50)
        received = time.time()
        for records in batches.values():
            for record in records:
                _, change = codec.decode(record.value, expected="risk_change")
                if change["trigger"] not in EVENT_TRIGGERS:
                    continue
                as_of_ms = int(change["as_of"].timestamp() * 1000)
                sent = sent_at.get((change["customer_id"], as_of_ms))
                if sent is None:
                    unmatched += 1
                elif sent >= warmup_until:
                    latencies_ms.append((sent, (received - sent) * 1000.0))
                    appended = record.timestamp / 1000.0
                    legs_ms.append(((appended - sent) * 1000.0, (received - appended) * 1000.0))
    return unmatched


async def _run(
    settings: Settings,
    records: Sequence[Record],
    rate: float,
    partitions: int,
    warmup_s: float,
    drain_s: float,
) -> LatencyResult:
    topic = settings.topic("risk-changes")
    # A downstream consumer that wants low latency asks for short fetch waits: aiokafka's
    # default (500 ms) parks a fetch that leaves out partitions whose records it still holds.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.broker, acks="all", linger_ms=0)
    await consumer.start()
    await producer.start()
    sent_at: dict[tuple[str, int], float] = {}
    latencies_ms: list[tuple[float, float]] = []
    legs_ms: list[tuple[float, float]] = []
    stop = asyncio.Event()
    try:
        found = await producer.partitions_for(topic)  # also fetches the topic's metadata
        assigned = [TopicPartition(topic, p) for p in sorted(found)]
        if not assigned:
            raise RuntimeError(f"topic {topic!r} has no partitions")
        consumer.assign(assigned)
        await consumer.seek_to_end(*assigned)
        for tp in assigned:  # resolve the end offsets now, before anything is sent
            await consumer.position(tp)
        started = time.time()
        reader = asyncio.ensure_future(
            _consume(consumer, sent_at, latencies_ms, legs_ms, stop, started + warmup_s)
        )
        topics = {name: settings.topic(name) for name in {record.topic for record in records}}
        pending: list[Any] = []
        index = 0
        while index < len(records):
            # Every record due by now is handed to the producer, then the loop sleeps at
            # least a tick: a sleep per record (0.2 ms apart at 4,500/s) cost the bench more
            # CPU than the sends, on the cores the worker and the broker use.
            due = min(len(records), int((time.time() - started) * rate) + 1)
            for record in records[index:due]:
                sent_at[(record.customer_id, record.event_time_ms)] = time.time()
                pending.append(
                    await producer.send(
                        topics[record.topic],
                        key=record.key,
                        value=record.value,
                        partition=partition_of(record.key, partitions),
                    )
                )
            index = max(index, due)
            await asyncio.sleep(max(SEND_TICK_S, started + index / rate - time.time()))
        duration_s = time.time() - started
        await asyncio.gather(*pending)
        await asyncio.sleep(drain_s)
        stop.set()
        unmatched = await reader
    except BaseException:
        stop.set()
        raise
    finally:
        await producer.stop()
        await consumer.stop()
    values = [latency for _, latency in latencies_ms]
    slices: list[float | None] = []
    counts: list[int] = []
    for start in range(0, int(duration_s) + 1, 5):
        begin = started + start
        in_slice = [ms for sent, ms in latencies_ms if begin <= sent < begin + 5]
        slices.append(None if not in_slice else round(percentile(in_slice, 0.5) or 0.0, 1))
        counts.append(len(in_slice))
    return LatencyResult(
        rate_per_s=rate,
        sent=len(records),
        duration_s=duration_s,
        samples=len(values),
        p50_ms=percentile(values, 0.50),
        p99_ms=percentile(values, 0.99),
        max_ms=max(values, default=None),
        unmatched_risk_changes=unmatched,
        p50_ms_by_5s=slices,
        samples_by_5s=counts,
        in_leg_ms=_p50_p99([leg for leg, _ in legs_ms]),
        out_leg_ms=_p50_p99([leg for _, leg in legs_ms]),
    )


def _p50_p99(values: Sequence[float]) -> tuple[float | None, float | None]:
    return percentile(values, 0.50), percentile(values, 0.99)


def half_load(
    settings: Settings,
    records: Sequence[Record],
    rate: float,
    partitions: int,
    warmup_s: float = 3.0,
    drain_s: float = 3.0,
) -> LatencyResult:
    """Send ``records`` at ``rate`` per second and return the latency of the risk changes.

    The bench's own garbage collector is off while it measures: this process holds the
    whole input (millions of objects), and one full collection of it stops the sender and
    the reader for hundreds of milliseconds, which would be counted as the worker's latency.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return asyncio.run(_run(settings, records, rate, partitions, warmup_s, drain_s))
    finally:
        gc.enable()
        gc.unfreeze()
