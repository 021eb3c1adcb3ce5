"""The tuned Faust app: short consumer fetch waits, a quiet monitor, uvloop."""

from __future__ import annotations

import asyncio

import aiokafka
import pytest

from streams.worker import tuning
from streams.worker.batch_writes import add_flush_hook
from streams.worker.tuning import FETCH_MAX_WAIT_MS, QuietMonitor, TunedApp


def test_the_worker_consumer_asks_for_short_fetch_waits() -> None:
    async def create() -> int:
        app = TunedApp("tuning-test", broker="kafka://127.0.0.1:1", web_enabled=False)
        thread = app.consumer._thread
        assert isinstance(thread, tuning._ConsumerThread)
        client = thread._create_worker_consumer(app.transport)
        assert isinstance(client, aiokafka.AIOKafkaConsumer)
        wait_ms: int = client._fetch_max_wait_ms
        await client.stop()  # never started: releases nothing but its client object
        return wait_ms

    # faust hard-codes 1500 ms; aiokafka reads this private attribute when it starts
    assert asyncio.run(create()) == FETCH_MAX_WAIT_MS < 1500


def test_the_monitor_skips_per_record_work_but_keeps_commit_stats() -> None:
    app = TunedApp("tuning-test-2", broker="kafka://127.0.0.1:1", web_enabled=False)
    monitor = app.monitor
    assert isinstance(monitor, QuietMonitor)
    monitor.on_message_in(None, 1, None)
    monitor.on_stream_event_out(None, 1, None, None, None)
    assert monitor.messages_received_total == 0
    assert monitor.events_total == 0


def test_use_uvloop_installs_its_policy() -> None:
    uvloop = pytest.importorskip("uvloop")
    before = asyncio.get_event_loop_policy()
    try:
        assert tuning.use_uvloop()
        assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
    finally:
        asyncio.set_event_loop_policy(before)


def test_the_producer_hands_over_batch_writes_before_it_flushes() -> None:
    calls: list[str] = []

    async def scenario() -> None:
        app = TunedApp("tuning-test-3", broker="kafka://127.0.0.1:1", web_enabled=False)
        producer = app.producer
        assert isinstance(producer, tuning._Producer)

        async def hook() -> None:
            calls.append("hook")

        add_flush_hook(app, hook)

        async def buffer_flush() -> None:
            calls.append("faust buffer")

        producer.buffer.flush = buffer_flush  # the base flush starts with Faust's buffer
        await producer.flush()

    asyncio.run(scenario())
    assert calls == ["hook", "faust buffer"]


def test_aiokafka_keeps_undrained_batches_where_push_urgent_looks() -> None:
    # PartitionBatches.urgent_waiting reads this private attribute (aiokafka 0.14): a batch
    # handed over waits there until the sender drains it into a produce request.
    async def look() -> tuple[bool, bool]:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
        accumulator = producer._message_accumulator
        empty = bool(accumulator._batches)
        builder = producer.create_batch()
        builder.append(key=b"k", value=b"v", timestamp=None)
        builder.close()
        await accumulator.add_batch(builder, aiokafka.TopicPartition("t", 0), timeout=1)
        waiting = bool(accumulator._batches)
        await producer.stop()  # never started: closes its client object
        return empty, waiting

    assert asyncio.run(look()) == (False, True)
