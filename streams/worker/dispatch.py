"""Faust's consumer loop, delivering each fetched batch at once instead of record by record.

faust-streaming 0.15's ``Consumer._drain_messages`` (``faust/transport/consumer.py``) hands
every fetched record to the conductor with ``await self.wait_first(callback(message),
self.suspend_flow.wait())``: mode's ``wait_first`` wraps each awaitable in a task and waits
on four futures (the callback, the suspend-flow event, the service's stopped and crashed
events), so every record costs four futures, a task and an ``asyncio.wait``. The conductor's
callback then takes an ``asyncio.Lock`` to find the partition's channels, wraps the record in
an ``Event`` and puts it on each channel's queue, and the agent's stream takes it off again.

:func:`drain_messages` is the same loop with the same offset, gap and commit bookkeeping,
delivering each fetched batch at once (:func:`deliver`):

- records of an ordinary topic go to the conductor's callback one by one inside one
  ``wait_first`` per run of them (agents, tables and their streams work unchanged, and a
  rebalance still interrupts a delivery that waits on a full channel queue);
- records of a topic with a *batch handler* (:func:`add_batch_topic`) go to that handler as
  lists of up to :data:`BATCH_MAX` consecutive records of the fetch, with no ``Event``, channel
  queue or stream in between. Each record is tracked as un-acknowledged first (Faust then
  commits only what the handler acknowledges with ``consumer.ack(message)``, and a rebalance
  or a stopping worker waits for those acknowledgements).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING

# Most records handed to a batch handler in one call: the event loop runs timers and sends
# between calls, so this bounds how long a call keeps them waiting.
BATCH_MAX = 64
# Ordinary records delivered between two yields to the event loop (Faust's own value).
YIELD_EVERY = 100

BatchHandler = Callable[[Sequence[Any]], Awaitable[None]]


def batch_handlers(app: Any) -> dict[str, BatchHandler]:
    """Return ``app``'s batch handlers by topic name (created empty on first use)."""
    handlers: dict[str, BatchHandler] | None = getattr(app, "_churnstream_batch_handlers", None)
    if handlers is None:
        handlers = {}
        app._churnstream_batch_handlers = handlers
    return handlers


def add_batch_topic(app: Any, topic: Any, handler: BatchHandler) -> None:
    """Subscribe ``app`` to ``topic`` (a Faust topic) and hand its records to ``handler``.

    The app must be a :class:`~streams.worker.tuning.TunedApp` (whose consumer runs
    :func:`drain_messages`); ``topic`` must not also be an agent's.
    """
    handlers = batch_handlers(app)
    for name in topic.topics:
        handlers[name] = handler
    app.topics.add(topic)


async def _one_by_one(callback: Callable[[Any], Awaitable[None]], messages: list[Any]) -> None:
    for index, message in enumerate(messages, 1):
        await callback(message)
        if not index % YIELD_EVERY:
            await asyncio.sleep(0)


async def deliver(consumer: Any, messages: Sequence[Any]) -> None:
    """Deliver one fetched batch in order: batch-handled runs as lists, the rest one by one.

    Ordinary records go through the conductor's callback inside one ``wait_first`` with the
    consumer's suspend-flow event, as Faust does per record: a rebalance interrupts a delivery
    waiting on a full channel queue. A batch handler is never interrupted halfway (its
    records' effects would be half sent); instead no further list is handed over once the
    flow is stopped or the consumer generation moved on (a rebalance began: Faust seeks back
    to the committed offsets afterwards, so those records come again).
    """
    handlers = batch_handlers(consumer.app)
    app = consumer.app
    ordinary: list[Any] = []
    run: list[Any] = []
    run_handler: BatchHandler | None = None

    async def hand_over() -> None:
        nonlocal ordinary, run
        if ordinary:
            todo, ordinary = ordinary, []
            await consumer.wait_first(
                _one_by_one(consumer.callback, todo), consumer.suspend_flow.wait()
            )
        if run and run_handler is not None:
            chunk, run = run, []
            if not consumer.flow_active or chunk[0].generation_id != app.consumer_generation_id:
                return
            for message in chunk:
                consumer.track_message(message)
            await app.producer.buffer.wait_until_ebb()
            await run_handler(chunk)
            await asyncio.sleep(0)

    for message in messages:
        handler = handlers.get(message.topic)
        if handler is None:
            if run:
                await hand_over()
            ordinary.append(message)
            continue
        if ordinary or handler is not run_handler or len(run) >= BATCH_MAX:
            await hand_over()
            run_handler = handler
        run.append(message)
    await hand_over()


def commit_in_background(consumer: Any) -> asyncio.Future[Any] | None:
    """Start committing acknowledged offsets unless a commit runs; return the commit's task.

    Faust's loop awaits the commit before it delivers the next fetch. A commit first waits
    for the producer to send everything (``producer.flush()``), then for the broker's answer,
    then writes each table's persisted offsets: tens to hundreds of ms in which no record
    is handed over (and when Faust's commit timer is already committing, ``commit()`` waits
    for that one). Committed offsets only ever cover acknowledged records, so committing
    beside the delivery changes nothing but when the offsets reach the broker. A commit that
    raises crashes the consumer, as it would have done inline.
    """
    running: asyncio.Future[Any] | None = getattr(consumer, "_churnstream_commit", None)
    if running is not None and not running.done():
        return None
    task: asyncio.Future[Any] = asyncio.ensure_future(consumer.commit())
    consumer._churnstream_commit = task  # a strong reference while it runs
    task.add_done_callback(functools.partial(_commit_done, consumer))
    return task


def _commit_done(consumer: Any, task: asyncio.Future[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        consumer.log.exception("Commit raised: %r", exc, exc_info=exc)
        # a strong reference until the crash has run
        consumer._churnstream_crash = asyncio.ensure_future(consumer.crash(exc))


async def drain_messages(consumer: Any, fetcher: Any) -> None:
    """``Consumer._drain_messages`` with one delivery per fetched batch (module docstring)."""
    getmany = consumer.getmany
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    read_offset = consumer._read_offset
    set_flag, unset_flag = consumer.diag.set_flag, consumer.diag.unset_flag
    commit_every = consumer._commit_every
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            batch: list[Any] = []
            # Sleeping because getmany may return at once, never releasing the event loop.
            await consumer.sleep(0)
            if not consumer.should_stop:
                async for tp, message in getmany(timeout=1.0):
                    offset = message.offset
                    r_offset = read_offset[tp]
                    if r_offset is None or offset >= r_offset:
                        if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                            await consumer._add_gap(tp, r_offset + 1, offset)
                        read_offset[tp] = offset
                        batch.append(message)
            unset_flag(CONSUMER_FETCHING)
            if not batch:
                continue
            if commit_every is not None and consumer._n_acked >= commit_every:
                consumer._n_acked = 0
                commit_in_background(consumer)
            await deliver(consumer, batch)
    except consumer.consumer_stopped_errors:
        if consumer.transport.app.should_stop:
            consumer.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if consumer.transport.app.should_stop:
            consumer.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        consumer.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)
