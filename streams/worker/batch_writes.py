r"""Sending many records of one partition at once as aiokafka produce batches.

Faust sends every record through ``Producer.send`` (a ``FutureMessage``, the producer
buffer, ``Topic.publish_message``, aiokafka's per-record future and accumulator step: ~10 µs
each). The worker's outputs (risk changes, interventions, training examples, a window's
latest scores and its states' changelog records) go here instead:
:class:`PartitionBatches` appends records to aiokafka ``BatchBuilder``\ s
(``AIOKafkaProducer.create_batch``/``send_batch``) of one topic partition: no future per
record. The batches join the same producer's accumulator as Faust's own sends, so
``producer.flush()`` (which Faust's consumer awaits before it commits offsets) waits for
them too, and it counts what the broker acknowledged, so a caller can wait until everything
sent before some point is delivered (``streams/worker/state_writes.py`` does, before it
makes a state durable). Inside a Faust transaction (exactly-once; churnstream's worker runs
at-least-once) records go one by one through Faust's producer.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

Pair = tuple[bytes, bytes]
# Event-loop turns :meth:`PartitionBatches.push_urgent` gives urgent records at most. A batch
# takes ~3 turns from ``enqueue`` to a produce request's write (the partition's hand-over
# task, aiokafka's sender, its request task); more while the previous request's answer is
# still to be read. At 5,000 records/s 3 were needed in most calls; 1.5 % of calls reached the
# limit (the broker had not answered yet: those records leave at a later turn).
URGENT_TURNS = 16
FlushHook = Callable[[], Awaitable[None]]


def flush_hooks(app: Any) -> list[FlushHook]:
    """Return what ``app``'s producer awaits at the start of each ``flush()`` (made on use)."""
    hooks: list[FlushHook] | None = getattr(app, "_churnstream_flush_hooks", None)
    if hooks is None:
        hooks = []
        app._churnstream_flush_hooks = hooks
    return hooks


def add_flush_hook(app: Any, hook: FlushHook) -> None:
    """Make ``app``'s producer await ``hook()`` before it flushes (TunedApp's producer)."""
    flush_hooks(app).append(hook)


def urgent_producer(producer: Any) -> Any:
    """Return the aiokafka producer for records a person waits for: the second producer of
    ``producer`` (a TunedApp's, streams/worker/tuning.py) or, without one, its own."""
    urgent = getattr(producer, "_urgent", None)
    return urgent if urgent is not None else producer._ensure_producer()


@dataclass(slots=True)
class _Built:
    """A produce batch being filled or waiting for its turn, and who wants its last offset."""

    batch: Any
    count: int = 0
    callbacks: list[Callable[[int], None]] = field(default_factory=list)


@dataclass(slots=True)
class _Lane:
    """One topic partition: its batches in order, and the task handing them to aiokafka."""

    waiting: deque[_Built] = field(default_factory=deque)
    pump: asyncio.Future[None] | None = None
    created: int = 0  # batches made for this partition so far
    handed: int = 0  # of those, handed to aiokafka (in order)
    delivered: int = 0  # of those, acknowledged by the broker (in order)
    # (batches to have been handed, future) of callers waiting for that
    waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)

    def handed_one(self) -> None:
        self.handed += 1
        if self.waiters:
            still = []
            for target, waiter in self.waiters:
                if target <= self.handed:
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    still.append((target, waiter))
            self.waiters = still

    def fail(self, exc: BaseException) -> None:
        for _, waiter in self.waiters:
            if waiter.done():
                continue
            if isinstance(exc, asyncio.CancelledError):
                waiter.cancel()
            else:
                waiter.set_exception(exc)
        self.waiters = []


class PartitionBatches:
    """Sends records to one topic partition at a time as aiokafka produce batches.

    aiokafka's ``send_batch`` waits until the partition's previous batch has left the
    accumulator (linger plus a produce round trip). So records are appended to the
    partition's newest batch that is not handed over yet, and one background task per
    partition hands the batches over in order: while one waits for its turn, new records join
    the next, as aiokafka's own ``send`` does.

    :meth:`handed_over` waits until everything queued before the call is in aiokafka's
    accumulator (records queued meanwhile need not be). The worker's producer runs it at the
    start of every ``flush()`` (``streams/worker/tuning.py``), which Faust awaits before it
    commits offsets: a committed offset's outputs are always sent, and acknowledging a
    record never waits for its outputs to be handed over.
    """

    def __init__(self, app: Any, urgent_topics: Collection[str] = ()) -> None:
        self.app = app
        # topics sent on the app's second producer (streams/worker/tuning.py), if it has one
        self.urgent_topics = frozenset(urgent_topics)
        self.records = 0
        self.batches = 0
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._urgent_lanes: list[_Lane] = []  # the lanes of urgent_topics
        # called (no arguments) each time a batch is acknowledged by the broker
        self.on_delivery: list[Callable[[], None]] = []
        add_flush_hook(app, self.handed_over)

    async def send(
        self,
        topic: str,
        partition: int,
        records: Sequence[Pair],
        on_delivered: Callable[[int], None] | None = None,
    ) -> None:
        """Queue ``records`` (key, value) to ``topic``/``partition``, in order.

        ``on_delivered(last_offset)`` is called as each batch holding some of them is
        acknowledged by the broker, with the offset of that batch's last record. Inside a
        Faust transaction the records go one by one through Faust's producer.
        """
        if not records:
            return
        if self.app.in_transaction:
            await self._send_one_by_one(topic, partition, records, on_delivered)
            return
        self.enqueue(topic, partition, records, on_delivered)

    def enqueue(
        self,
        topic: str,
        partition: int,
        records: Sequence[Pair],
        on_delivered: Callable[[int], None] | None = None,
    ) -> None:
        """:meth:`send` outside a transaction, without waiting for anything."""
        if not records:
            return
        producer = self._producer_for(topic)
        lane = self._lanes.get((topic, partition))
        if lane is None:
            lane = self._lanes[(topic, partition)] = _Lane()
            if topic in self.urgent_topics:
                self._urgent_lanes.append(lane)
        waiting = lane.waiting
        built = waiting[-1] if waiting else None
        for key, value in records:
            if built is None or built.batch.append(key=key, value=value, timestamp=None) is None:
                if built is not None and on_delivered is not None:
                    built.callbacks.append(on_delivered)
                built = _Built(producer.create_batch())
                waiting.append(built)
                lane.created += 1
                self.batches += 1
                if built.batch.append(key=key, value=value, timestamp=None) is None:
                    msg = f"a record of {len(value)} bytes does not fit a batch of {topic}"
                    raise ValueError(msg)
            built.count += 1
        if built is not None and on_delivered is not None:
            built.callbacks.append(on_delivered)
        self.records += len(records)
        if lane.pump is None or lane.pump.done():
            if lane.pump is not None:
                lane.pump.result()  # raise what a previous hand-over raised
            lane.pump = asyncio.ensure_future(self._pump(lane, topic, partition))

    def urgent_waiting(self) -> bool:
        """Whether a record of an urgent topic is queued but not in a produce request yet.

        Either its batch is not handed to aiokafka yet, or it waits in aiokafka's accumulator
        (private: ``_message_accumulator._batches``, checked by
        tests/unit/test_worker_tuning.py) for the sender to drain it into a request.
        """
        if not self.urgent_topics:
            return False
        if any(lane.handed < lane.created for lane in self._urgent_lanes):
            return True
        return bool(urgent_producer(self.app.producer)._message_accumulator._batches)

    async def push_urgent(self, turns: int = URGENT_TURNS) -> None:
        """Let the event loop run until urgent records are in a produce request (``turns`` at most).

        From a closed batch to the socket takes aiokafka a few turns of the event loop, and
        more when the previous request's answer is still unread (one request in flight per
        connection). A caller that goes on to its next CPU-bound step at once (the scoring
        handler's next list of records, ~8 ms) gets back to the loop only after it, so each
        turn a risk change still needed cost a whole list: measured at 5,000 records/s, the
        worker → reader leg's p99 was 17-38 ms without this and 10-11 ms with it. A turn
        with nothing else ready costs microseconds; past ``turns`` it gives up (the broker
        is slow to answer: the records leave at a later turn).
        """
        waited = 0
        while waited < turns and self.urgent_waiting():
            await asyncio.sleep(0)
            waited += 1
        if waited:
            await asyncio.sleep(0)  # the request's task writes it in its first step

    def _producer_for(self, topic: str) -> Any:
        if topic in self.urgent_topics:
            return urgent_producer(self.app.producer)
        return self.app.producer._ensure_producer()  # faust's aiokafka Producer

    def mark(self) -> dict[tuple[str, int], int]:
        """Return where every partition's batches stand now: :meth:`delivered` takes it."""
        return {
            key: lane.created for key, lane in self._lanes.items() if lane.delivered < lane.created
        }

    def delivered(self, mark: dict[tuple[str, int], int]) -> bool:
        """Return whether every record queued before :meth:`mark` was taken is delivered."""
        lanes = self._lanes
        return all(lanes[key].delivered >= count for key, count in mark.items())

    def created(self, topic: str, partition: int) -> int:
        """Return how many batches ``topic``/``partition`` has had so far (its newest one's
        number, once records were queued to it)."""
        lane = self._lanes.get((topic, partition))
        return 0 if lane is None else lane.created

    def delivered_count(self, topic: str, partition: int) -> int:
        """Return how many of ``topic``/``partition``'s batches the broker acknowledged."""
        lane = self._lanes.get((topic, partition))
        return 0 if lane is None else lane.delivered

    async def handed_over(self) -> None:
        """Wait until every record queued before this call is in the producer's accumulator.

        Records queued while it waits join later batches and are not waited for, so it
        returns under a steady stream of sends too. Raises what a hand-over raised (the
        producer is closed or failed).
        """
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[None]] = []
        for lane in self._lanes.values():
            if lane.handed >= lane.created:
                continue
            if lane.pump is None or lane.pump.done():
                if lane.pump is not None:
                    lane.pump.result()  # raise what the hand-over raised
                msg = "produce batches are queued but no task hands them over"
                raise RuntimeError(msg)
            waiter: asyncio.Future[None] = loop.create_future()
            lane.waiters.append((lane.created, waiter))
            waits.append(waiter)
        for waiter in waits:
            await waiter

    async def settled(self) -> None:
        """Wait until every batch queued is in the producer's accumulator (tests, shutdown)."""
        await self.handed_over()

    async def _pump(self, lane: _Lane, topic: str, partition: int) -> None:
        waiting = lane.waiting
        try:
            while waiting:
                built = waiting.popleft()  # from now on no record joins it
                # A closed batch leaves at once: aiokafka lingers (producer_linger) only while
                # a batch may still grow, and records that come meanwhile join the next one.
                built.batch.close()
                producer = self._producer_for(topic)  # the second one is gone once stopped
                future = await producer.send_batch(built.batch, topic, partition=partition)
                lane.handed_one()
                future.add_done_callback(functools.partial(self._delivered, lane, built))
        except BaseException as exc:
            lane.fail(exc)
            raise

    def _delivered(self, lane: _Lane, built: _Built, done: asyncio.Future[Any]) -> None:
        # aiokafka keeps one request per partition in flight: a partition's batches are
        # acknowledged in order. A failed batch is never counted (what waits on it waits
        # on: the producer has failed, and Faust's commit raises it).
        if done.cancelled() or done.exception() is not None:
            return
        lane.delivered += 1
        last = done.result().offset + built.count - 1
        for callback in built.callbacks:
            callback(last)
        for listener in self.on_delivery:
            listener()

    async def _send_one_by_one(
        self,
        topic: str,
        partition: int,
        records: Sequence[Pair],
        on_delivered: Callable[[int], None] | None,
    ) -> None:
        producer = self.app.producer
        for key, value in records:
            future = await producer.send(topic, key, value, partition, None, None)
            self.records += 1
            if on_delivered is not None:
                future.add_done_callback(
                    lambda done: None if done.exception() else on_delivered(done.result().offset)
                )


def table_reader(table: Any, partition_of: Callable[[str], int]) -> Callable[[str], Any]:
    """Return ``key -> stored value or None`` reading only the key's partition of ``table``.

    ``Table.get`` costs ~11 µs a hit and ~5 µs a miss through Faust's mapping layers, and
    with no current event (the batch handler has none) its store looks the key up in every
    partition's database; this reads the one database the key's partition writes to
    (``partition_of``, the producer's partitioner: the table is co-partitioned with the
    input) in ~1.5 µs. A partition that is not open here falls back to ``Table.get``.
    """
    store = table.data
    encode_key, _, decode_value = store_codec(store)

    def read(key: Any) -> Any:
        db = store._dbs.get(partition_of(key))
        if db is None:
            return table.get(key)
        raw = db.get(encode_key(key))
        return None if raw is None else decode_value(raw)

    return read


# What a customer state looks like to the codec check below (nested lists and dicts, floats
# of every size, None, booleans, big ints, non-ASCII text).
_PROBE_KEY = 'probe-é"ü'
_PROBE_VALUE = {
    "v": 4,
    "values": ["c-1", 1.5, -0.0, 1e-300, 2**53 + 1, None, True, [0.1, {"é": 2.5}], "\u2603"],
}


def store_codec(
    store: Any,
) -> tuple[Callable[[Any], bytes], Callable[[Any], bytes], Callable[[bytes], Any]]:
    """Return ``(encode key, encode value, decode value)`` of a Faust store's JSON schema.

    Faust's own go through its serializer registry (~1 µs per key, 1.5 µs per value, 5 µs
    per decode); with orjson installed they produce exactly what ``orjson.dumps`` does and
    read what ``orjson.loads`` reads, which cost a fraction of that. orjson's are returned
    only when a probe round-trips to the very same bytes and values through both; else
    Faust's own.
    """
    encode_key, encode_value, decode_value = (
        store._encode_key,
        store._encode_value,
        store._decode_value,
    )
    try:
        import orjson
    except ImportError:  # pragma: no cover - a dependency; kept for odd platforms
        return encode_key, encode_value, decode_value
    encoded = encode_value(_PROBE_VALUE)
    if (
        encode_key(_PROBE_KEY) == orjson.dumps(_PROBE_KEY)
        and encoded == orjson.dumps(_PROBE_VALUE)
        and decode_value(encoded) == orjson.loads(encoded) == _PROBE_VALUE
    ):
        return orjson.dumps, orjson.dumps, orjson.loads
    return encode_key, encode_value, decode_value
