"""Faust's consumer loop, delivering each fetched batch at once instead of record by record.

faust-streaming 0.15's ``Consumer._drain_messages`` (``faust/transport/consumer.py``) takes
records from ``Consumer.getmany``, an async generator that per record round-robins over the
fetched topics, asks the partition's highwater, updates the monitor and builds a
``ConsumerMessage``; then it hands every record to the conductor with ``await
self.wait_first(callback(message), self.suspend_flow.wait())``: mode's ``wait_first`` wraps
each awaitable in a task and waits on four futures, the conductor takes an ``asyncio.Lock``
to find the partition's channels, wraps the record in an ``Event`` and puts it on each
channel's queue, and the agent's stream takes it off again.

:func:`drain_messages` is the same loop with the same offset, gap and commit bookkeeping,
taking each fetch as lists per topic partition (:func:`fetch`) and delivering it at once
(:func:`deliver`):

- records of an ordinary topic become Faust messages and go to the conductor's callback one
  by one inside one ``wait_first`` per partition's run (agents, tables and their streams
  work unchanged, and a rebalance still interrupts a delivery that waits on a full channel
  queue);
- records of a topic with a *batch handler* (:func:`add_batch_topic`) go to that handler as
  they came from aiokafka (``ConsumerRecord``: ``topic``, ``partition``, ``offset``, ``key``,
  ``value``, ``headers``), a list per partition, the partitions taking turns, up to
  :data:`BATCH_MAX` records per call, with no message object, ``Event``, channel queue or
  stream in between. The handler
  acknowledges them by offset (:func:`ack_offsets`: Faust then commits only acknowledged
  offsets) and keeps an :class:`Unfinished` token in Faust's set of unacknowledged
  messages while it holds any, so a rebalance or a stopping worker waits for it as it does
  for messages.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

# Most records handed to a batch handler in one call: the event loop runs timers and sends
# between calls, so this bounds how long a call keeps them waiting.
BATCH_MAX = 64
# Ordinary records delivered between two yields to the event loop (Faust's own value).
YIELD_EVERY = 100

# Records of one or more topic partitions (each partition's in offset order), in one call.
Lists = Sequence[tuple[TP, Sequence[Any]]]
BatchHandler = Callable[[Lists], Awaitable[None]]


def batch_handlers(app: Any) -> dict[str, BatchHandler]:
    """Return ``app``'s batch handlers by topic name (created empty on first use)."""
    handlers: dict[str, BatchHandler] | None = getattr(app, "_churnstream_batch_handlers", None)
    if handlers is None:
        handlers = {}
        app._churnstream_batch_handlers = handlers
    return handlers


def add_batch_topic(app: Any, topic: Any, handler: BatchHandler) -> None:
    """Subscribe ``app`` to ``topic`` (a Faust topic) and hand its records to ``handler``.

    ``handler(lists)`` gets ``(tp, records)`` pairs: aiokafka ``ConsumerRecord``s of topic
    partitions, each in offset order, at most :data:`BATCH_MAX` records in all. The app
    must be a :class:`~streams.worker.tuning.TunedApp` (whose consumer runs
    :func:`drain_messages`); ``topic`` must not also be an agent's.
    """
    handlers = batch_handlers(app)
    for name in topic.topics:
        handlers[name] = handler
    app.topics.add(topic)


class Unfinished:
    """Stands in Faust's set of unacknowledged messages for records a batch handler holds.

    Faust's ``Consumer.wait_empty`` (before a rebalance or a stop completes) waits until that
    set is empty, dropping members whose ``acked`` is true; it is a weak set, so a token
    nobody references any more is gone from it too.
    """

    __slots__ = ("__weakref__", "acked", "refcount")

    def __init__(self) -> None:
        self.acked = False
        self.refcount = 1


def hold(consumer: Any) -> Unfinished:
    """Put a new :class:`Unfinished` token in ``consumer``'s unacknowledged set; return it."""
    token = Unfinished()
    consumer._unacked_messages.add(token)
    return token


def release(consumer: Any, token: Unfinished) -> None:
    """Take ``token`` out of ``consumer``'s unacknowledged set; wake whoever waits for it."""
    token.acked = True
    consumer._unacked_messages.discard(token)
    notify(consumer._waiting_for_ack)


def ack_offsets(consumer: Any, tp: TP, offsets: Iterable[int]) -> int:
    """Acknowledge ``offsets`` of ``tp`` as ``Consumer.ack`` does a message's; return how many.

    An offset below the committed one, or acknowledged before, is skipped (as Faust does).
    """
    with ack_lock:
        committed = consumer._committed_offset[tp]
        acked_index = consumer._acked_index[tp]
        acked = consumer._acked[tp]
        count = 0
        for offset in offsets:
            if (committed is None or offset >= committed) and offset not in acked_index:
                acked_index.add(offset)
                acked.append(offset)
                count += 1
        consumer._n_acked += count
        notify(consumer._waiting_for_ack)
    return count


async def _one_by_one(callback: Callable[[Any], Awaitable[None]], messages: list[Any]) -> None:
    for index, message in enumerate(messages, 1):
        await callback(message)
        if not index % YIELD_EVERY:
            await asyncio.sleep(0)


Fetched = tuple[TP, list[Any]]


async def fetch(consumer: Any, timeout: float) -> tuple[list[Fetched], int]:
    """Return the next fetch's records per topic partition and the consumer generation.

    What ``Consumer.getmany`` does, once per partition instead of once per record: only
    active (or buffered) partitions, the monitor's end offsets, and the read-offset and gap
    bookkeeping that commits rely on (a record below the partition's read offset is a
    duplicate and dropped; a jump in offsets is a gap Faust commits over).
    """
    records, active = await consumer._wait_next_records(timeout)
    generation: int = consumer.app.consumer_generation_id
    if records is None or consumer.should_stop:
        return [], generation
    if not consumer.flow_active:
        consumer.log.dev("fetch while flow not active: seek back to committed offsets")
        try:
            await consumer.perform_seek()
        except Exception as exc:
            consumer.log.warning(f"exception performing seek when flow not active {exc}")
        return [], generation
    buffered = consumer._buffered_partitions
    read_offset = consumer._read_offset
    track_end_offset = consumer.app.monitor.track_tp_end_offset
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    out: list[Fetched] = []
    for tp, tp_records in records.items():
        if not tp_records or not (active is None or tp in active or tp in buffered):
            continue
        track_end_offset(tp, consumer.highwater(tp))
        r_offset = read_offset[tp]
        first, last = tp_records[0].offset, tp_records[-1].offset
        if (r_offset is None or first == r_offset + 1) and last - first == len(tp_records) - 1:
            # the usual case: the partition's next offsets without a gap (a fetch's offsets
            # ascend, so first and last tell)
            read_offset[tp] = last
            out.append((tp, tp_records))
            continue
        kept = []
        gaps = acks_enabled_for(tp.topic)
        # Offsets this generation already handed to a batch handler are no gap: they are
        # acknowledged when handled. (After a rebalance Faust resumes fetching before it
        # seeks back to the committed offsets; a fetch from before the seek then arrives
        # after it, far past the read offset the seek set.)
        done = handed_up_to(consumer, tp, generation)
        for record in tp_records:
            offset = record.offset
            if r_offset is None or offset >= r_offset:
                start = max(r_offset + 1, done + 1) if r_offset else offset
                if start < offset and gaps:
                    # the offsets between are no records (compacted, control records)
                    await consumer._add_gap(tp, start, offset - 1)
                r_offset = offset
                kept.append(record)
        read_offset[tp] = r_offset
        if kept:
            out.append((tp, kept))
    return out, generation


async def deliver(consumer: Any, fetched: Sequence[Fetched], generation: int) -> None:
    """Deliver one fetch: batch-handled partitions as lists, the rest as Faust messages.

    Ordinary records go through the conductor's callback inside one ``wait_first`` with the
    consumer's suspend-flow event, as Faust does per record: a rebalance interrupts a delivery
    waiting on a full channel queue. A batch handler is never interrupted halfway (its
    records' effects would be half sent); instead no further list is handed over once the
    flow is stopped or the consumer generation moved on (a rebalance began: Faust seeks back
    to the committed offsets afterwards, so those records come again).
    """
    handlers = batch_handlers(consumer.app)
    app = consumer.app
    handled: list[tuple[BatchHandler, TP, list[Any]]] = []
    for tp, records in fetched:
        handler = handlers.get(tp.topic)
        if handler is None:
            to_message = consumer._to_message
            messages = [to_message(tp, record) for record in records]
            await consumer.wait_first(
                _one_by_one(consumer.callback, messages), consumer.suspend_flow.wait()
            )
        else:
            handled.append((handler, tp, records))
    if not handled:
        return
    # Sensors hear of a batch-handled partition's records once per fetch (Faust's per-message
    # ``on_message_in`` is not called for them): ``on_records_in(tp, count, last offset)``
    # where a sensor has it (streams/worker/web.py: records consumed, lag).
    records_in = [
        sensor.on_records_in for sensor in app.sensors if hasattr(sensor, "on_records_in")
    ]
    for _, tp, records in handled:
        for hook in records_in:
            hook(tp, len(records), records[-1].offset)
    # Partitions take turns, a share of records each, as Faust's getmany takes records
    # round-robin: the topics of one input partition then reach its event-time merge
    # together. A call gets at most BATCH_MAX records: under a backlog that bounds how long
    # it keeps timers and sends waiting; live, a whole fetch is often one call.
    for handler in {id(handler): handler for handler, _, _ in handled}.values():
        mine = [(tp, records) for owner, tp, records in handled if owner is handler]
        share = max(1, BATCH_MAX // len(mine))
        taken = [0] * len(mine)
        call: list[tuple[TP, Sequence[Any]]] = []
        size = 0
        while True:
            progressed = False
            for index, (tp, records) in enumerate(mine):
                start = taken[index]
                if start >= len(records):
                    continue
                progressed = True
                part = records[start : start + min(share, BATCH_MAX - size)]
                taken[index] += len(part)
                call.append((tp, part))
                size += len(part)
                if size >= BATCH_MAX:
                    if not await _hand_over(consumer, handler, call, generation):
                        return
                    call, size = [], 0
            if not progressed:
                break
        if call and not await _hand_over(consumer, handler, call, generation):
            return


async def _hand_over(consumer: Any, handler: BatchHandler, call: Lists, generation: int) -> bool:
    app = consumer.app
    if not consumer.flow_active or generation != app.consumer_generation_id:
        return False
    await app.producer.buffer.wait_until_ebb()
    handed = _handed(consumer)
    for tp, records in call:
        handed[tp] = (generation, max(handed_up_to(consumer, tp, generation), records[-1].offset))
    await handler(call)
    await asyncio.sleep(0)
    return True


def _handed(consumer: Any) -> dict[TP, tuple[int, int]]:
    handed: dict[TP, tuple[int, int]] | None = getattr(consumer, "_churnstream_handed", None)
    if handed is None:
        handed = consumer._churnstream_handed = {}
    return handed


def handed_up_to(consumer: Any, tp: TP, generation: int) -> int:
    """Return the highest offset of ``tp`` handed to a batch handler in ``generation`` (-1)."""
    found = _handed(consumer).get(tp)
    return found[1] if found is not None and found[0] == generation else -1


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
    """``Consumer._drain_messages`` with one delivery per fetch (module docstring)."""
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    set_flag, unset_flag = consumer.diag.set_flag, consumer.diag.unset_flag
    commit_every = consumer._commit_every
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            fetched: list[Fetched] = []
            generation = 0
            # Sleeping because a fetch may return at once, never releasing the event loop.
            await consumer.sleep(0)
            if not consumer.should_stop:
                fetched, generation = await fetch(consumer, timeout=1.0)
            unset_flag(CONSUMER_FETCHING)
            if not fetched:
                continue
            if commit_every is not None and consumer._n_acked >= commit_every:
                consumer._n_acked = 0
                commit_in_background(consumer)
            await deliver(consumer, fetched, generation)
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
