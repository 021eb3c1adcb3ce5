"""Latency at half load: input record's arrival at Kafka -> the risk change it caused, as read.

While a caught-up worker runs, :func:`half_load` sends pre-encoded input records at a fixed
rate (half of the worker's measured capacity) and reads ``risk-changes`` in the same event
loop. A risk change caused by an event carries that event's customer and event time
(``as_of``; ``trigger`` is the event type), which identifies the input record:

    latency = (wall time the bench's consumer received the risk change)
            - (the input record's arrival: the broker's append time, LogAppendTime)

So it includes the broker, the worker's fetch, decode, state, score, policy and send, the
broker again and the consumer's fetch: what the pipeline adds from the moment a record
arrived, as a downstream consumer of ``risk-changes`` sees it. For the run the input topics
stamp records with the broker's append time (``message.timestamp.type=LogAppendTime``, set
back afterwards), which the producer gets in each acknowledgement. The latency from the
moment the bench handed the record to its producer is reported beside it (``from_send``):
the sender hands the records due every 5 ms to the producer as one batch per partition, as
Kafka's own producer batches by default (linger.ms=5).
Records sent in the first ``warmup_s`` are left out.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from benchkit import percentile
from inputs import Record, partition_of
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from streams.io.avro import default_codec
from streams.settings import Settings

EVENT_TRIGGERS = frozenset({"click", "order", "profile"})
# The sender hands the records due to the producer once per tick, one batch per partition
# (aiokafka's batch API: ~1 µs per record against ~10-20 µs and a future per record with
# ``send``), like Kafka's own producer with linger.ms=5 (its default since Kafka 4.0). The
# bench shares the 2 cores with the worker and the broker: CPU it spends on sending is taken
# from them. One produce request per record or per 1 ms tick cost the broker more CPU than
# the records.
SEND_TICK_S = 0.005
TIMESTAMP_TYPE = "message.timestamp.type"

Key = tuple[str, int]  # (customer id, event time in ms): identifies an input record


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
    # time the worker appended it to a produce batch): "in" is the broker and the worker's
    # fetch and work; "out" the worker's produce request, the broker and the bench
    # consumer's fetch. Each as (p50, p99).
    in_leg_ms: tuple[float | None, float | None]
    out_leg_ms: tuple[float | None, float | None]
    # (p50, p99) from the moment the bench handed each record to its producer.
    from_send_ms: tuple[float | None, float | None]


@dataclass(slots=True)
class _Received:
    """Risk changes read, by the input record that caused them (the first of each)."""

    at: dict[Key, tuple[float, float]]  # key -> (received wall time, record timestamp)
    unmatched: int = 0


async def _consume(
    consumer: AIOKafkaConsumer,
    sent_at: dict[Key, float],
    received: _Received,
    stop: asyncio.Event,
) -> None:
    codec = default_codec()
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=50)
        now = time.time()
        for records in batches.values():
            for record in records:
                _, change = codec.decode(record.value, expected="risk_change")
                if change["trigger"] not in EVENT_TRIGGERS:
                    continue
                key = (change["customer_id"], int(change["as_of"].timestamp() * 1000))
                if key not in sent_at:
                    received.unmatched += 1
                elif key not in received.at:
                    received.at[key] = (now, record.timestamp / 1000.0)


@contextmanager
def arrival_timestamps(settings: Settings, topics: Sequence[str]) -> Iterator[None]:
    """Make ``topics`` stamp records with the broker's append time for the duration."""
    admin = KafkaAdminClient(bootstrap_servers=settings.broker)

    def set_type(value: str) -> None:
        admin.alter_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, name, configs={TIMESTAMP_TYPE: value})
                for name in topics
            ]
        )

    try:
        set_type("LogAppendTime")
        yield
    finally:
        try:
            set_type("CreateTime")
        finally:
            admin.close()


async def _send(
    producer: AIOKafkaProducer,
    settings: Settings,
    records: Sequence[Record],
    rate: float,
    partitions: int,
    sent_at: dict[Key, float],
    started: float,
) -> tuple[float, list[tuple[list[Key], Any]]]:
    topics = {name: settings.topic(name) for name in {record.topic for record in records}}
    pending: list[tuple[list[Key], Any]] = []  # (records of a batch, the batch's future)
    index = 0
    while index < len(records):
        # Every record due by now is handed to the producer, one batch per partition, then
        # the loop sleeps until the next tick.
        due = min(len(records), int((time.time() - started) * rate) + 1)
        batches: dict[tuple[str, int], tuple[Any, list[Key]]] = {}
        now = time.time()
        for record in records[index:due]:
            key = (record.customer_id, record.event_time_ms)
            sent_at[key] = now
            where = (topics[record.topic], partition_of(record.key, partitions))
            entry = batches.get(where)
            if entry is None:
                entry = batches[where] = (producer.create_batch(), [])
            if entry[0].append(key=record.key, value=record.value, timestamp=None) is None:
                pending.append((entry[1], await _send_batch(producer, entry[0], where)))
                entry = batches[where] = (producer.create_batch(), [])
                entry[0].append(key=record.key, value=record.value, timestamp=None)
            entry[1].append(key)
        for where, (batch, keys) in batches.items():
            pending.append((keys, await _send_batch(producer, batch, where)))
        index = max(index, due)
        await asyncio.sleep(max(SEND_TICK_S, started + index / rate - time.time()))
    return time.time() - started, pending


async def _send_batch(producer: AIOKafkaProducer, batch: Any, where: tuple[str, int]) -> Any:
    batch.close()
    topic, partition = where
    return await producer.send_batch(batch, topic, partition=partition)


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
    producer = AIOKafkaProducer(bootstrap_servers=settings.broker, acks="all")
    await consumer.start()
    await producer.start()
    sent_at: dict[Key, float] = {}
    received = _Received({})
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
        reader = asyncio.ensure_future(_consume(consumer, sent_at, received, stop))
        duration_s, pending = await _send(
            producer, settings, records, rate, partitions, sent_at, started
        )
        acknowledged = await asyncio.gather(*(future for _, future in pending))
        await asyncio.sleep(drain_s)
        stop.set()
        await reader
    except BaseException:
        stop.set()
        raise
    finally:
        await producer.stop()
        await consumer.stop()
    if any(meta.timestamp_type != 1 for meta in acknowledged):
        msg = "the input topics did not stamp the broker's append time (LogAppendTime)"
        raise RuntimeError(msg)
    # LogAppendTime is stamped per batch: each record of a batch arrived with it.
    arrived = {
        key: meta.timestamp / 1000.0
        for (keys, _), meta in zip(pending, acknowledged, strict=True)
        for key in keys
    }
    return _result(rate, len(records), duration_s, started + warmup_s, sent_at, arrived, received)


def _result(
    rate: float,
    sent: int,
    duration_s: float,
    warmup_until: float,
    sent_at: dict[Key, float],
    arrived: dict[Key, float],
    received: _Received,
) -> LatencyResult:
    samples: list[tuple[float, float]] = []  # (sent, ms from arrival), warm-up included
    values: list[float] = []
    from_send: list[float] = []
    legs_in: list[float] = []
    legs_out: list[float] = []
    for key, (got, appended) in received.at.items():
        sent_s = sent_at[key]
        samples.append((sent_s, (got - arrived[key]) * 1000.0))
        if sent_s < warmup_until:
            continue
        values.append(samples[-1][1])
        from_send.append((got - sent_s) * 1000.0)
        legs_in.append((appended - arrived[key]) * 1000.0)
        legs_out.append((got - appended) * 1000.0)
    slices: list[float | None] = []
    counts: list[int] = []
    started = min(sent_at.values(), default=0.0)
    for start in range(0, int(duration_s) + 1, 5):
        begin = started + start
        in_slice = [ms for sent_s, ms in samples if begin <= sent_s < begin + 5]
        slices.append(None if not in_slice else round(percentile(in_slice, 0.5) or 0.0, 1))
        counts.append(len(in_slice))
    return LatencyResult(
        rate_per_s=rate,
        sent=sent,
        duration_s=duration_s,
        samples=len(values),
        p50_ms=percentile(values, 0.50),
        p99_ms=percentile(values, 0.99),
        max_ms=max(values, default=None),
        unmatched_risk_changes=received.unmatched,
        p50_ms_by_5s=slices,
        samples_by_5s=counts,
        in_leg_ms=_p50_p99(legs_in),
        out_leg_ms=_p50_p99(legs_out),
        from_send_ms=_p50_p99(from_send),
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
    inputs = sorted({settings.topic(record.topic) for record in records})
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        with arrival_timestamps(settings, inputs):
            return asyncio.run(_run(settings, records, rate, partitions, warmup_s, drain_s))
    finally:
        gc.enable()
        gc.unfreeze()
