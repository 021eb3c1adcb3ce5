"""The Faust agents: decode, call the plain shells, send. Nothing else happens here.

The scoring handler takes the input topics' records as lists straight from the consumer's
fetch (``streams/worker/dispatch.py``: no per-record Faust ``Event``, channel queue or
stream) and works like Kafka Streams' record cache: each record is processed at once
(risk changes, training examples and interventions are sent right away), but the customer
states it changed, and the scores of the compacted scores topic, are written once per
customer per flush window, and the window's records are acknowledged only after that write.
Offsets are committed only for acknowledged records, so a crash re-delivers exactly the
records whose state was not written; the per-customer input offsets in the state make a
re-delivered record that *was* applied a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import faust
from faust.events import Event as FaustEvent
from faust.streams import _current_event
from faust.types import TP

from streams.core.events import Event
from streams.core.merge import PartitionMerge
from streams.core.records import ChurnScore
from streams.errors import DecodeError
from streams.metrics import ObservedSteps
from streams.settings import INPUT_TOPICS
from streams.worker.deadletters import dead_letter_headers
from streams.worker.dispatch import Lists, Unfinished, ack_offsets, add_batch_topic, hold
from streams.worker.dispatch import release as release_unfinished
from streams.worker.draining import Closed, PartitionStates, WindowDrain
from streams.worker.gc_policy import OldGenerations
from streams.worker.model_feed import follow_models
from streams.worker.outputs import Outputs, band_of, observe
from streams.worker.state_writes import DurableStates

if TYPE_CHECKING:
    from streams.worker.app import Worker

log = logging.getLogger(__name__)
# Uplift gauges are cheap to read but iterate every segment: refresh them at most this often.
UPLIFT_REFRESH_S = 5.0
# A flush window ends after this many records or this long, whichever comes first. Longer
# windows coalesce more writes of a customer (a session's clicks) into one state write and one
# score; bench/run.py's input needs 0.6 writes per record at 100 ms, 0.3 at 1 s. Risk
# changes, interventions and training examples do not wait for the window.
FLUSH_MAX_RECORDS = 10_000
FLUSH_EVERY_S = 1.0
# How often the quiet-window timer looks for a window to close and held records to release.
QUIET_CHECK_S = 0.1
# A closed window is written in steps after each list of records and at each quiet-window
# check, paced to end this long after it closed (streams/worker/draining.py): a score or a
# state is one item (~10-20 µs), an ack an eighth. Past that time the steps go on at no less
# than DRAIN_ITEMS_PER_RECORD items per record.
DRAIN_SPREAD_S = 0.6
DRAIN_ITEMS_PER_RECORD = 4
# Scores and states per produce batch and RocksDB batch.
DRAIN_CHUNK = 256
# The most the quiet-window timer writes of a closed window in one step (a few ms): once per
# check when the pace is behind, step after step while no records arrive.
DRAIN_ITEMS_PER_CHECK = 250
WALL_TICK_S = 1.0
# Records must have stopped this long for a full garbage collection to run early
# (streams/worker/gc_policy.py).
GC_QUIET_S = 1.0
# How long a record waits for an input topic that lags behind (Kafka Streams' max.task.idle.ms).
MERGE_MAX_WAIT_S = 0.5


@dataclass(slots=True)
class Window:
    """Records processed since the last flush, and what waits for the flush."""

    acks: list[tuple[TP, int]] = field(default_factory=list)  # (partition, offset) to ack
    last_event_of: dict[int, Any] = field(default_factory=dict)
    scores: dict[str, ChurnScore] = field(default_factory=dict)
    started_s: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class Held:
    """A decoded record waiting in its partition's event-time merge."""

    tp: TP
    record: Any  # aiokafka's ConsumerRecord
    decoded: Event
    source: int
    arrival_s: float
    generation: int


@contextmanager
def event_context(app: faust.App, message: Any) -> Iterator[None]:
    """Make a Faust event of ``message`` the current event, so table writes go to its partition.

    Faust tables take the changelog partition from the current event; a window's coalesced
    writes happen after its records, so each partition's writes run in the context of that
    partition's last record. (``_current_event`` is Faust's own context variable.)
    """
    event = FaustEvent(app, message.key, message.value, message.headers, message)
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def _raw(app: faust.App, name: str) -> Any:
    return app.topic(name, key_serializer="raw", value_serializer="raw", internal=False)


def wire_agents(worker: Worker) -> None:
    """Declare every agent, task and signal handler of ``worker``'s app."""
    app, settings, codec, shell = worker.app, worker.settings, worker.codec, worker.shell
    input_names = {settings.topic(name): name for name in INPUT_TOPICS}
    source_index = {full: index for index, full in enumerate(input_names)}
    inputs = app.topic(*input_names, key_serializer="raw", value_serializer="raw")
    examples = _raw(app, settings.topic("training-examples"))
    models_topic = _raw(app, settings.topic("churn-models"))
    dead_letters = _raw(app, settings.topic("dead-letters"))
    resend = {full: _raw(app, full) for full in input_names}
    window = [Window()]
    # The latest record of each partition (its context lets timers write that partition), and
    # when it arrived.
    seen_partitions: dict[int, tuple[Any, float]] = {}
    # Each partition's records wait here until the event-time merge of the three input
    # topics lets them go; the next offset of each input topic partition this agent expects.
    merges: dict[int, PartitionMerge[Held]] = {}
    next_unseen: dict[TP, int] = {}
    source_topics = list(input_names)
    # Input partitions this worker owns; records of others still in Faust's buffers after a
    # rebalance are left for their new owner (not processed, not acknowledged). The
    # generation changes at every revoke: records received before it are dropped too.
    owned: set[TP] = set()
    revoked: set[TP] = set()  # revoked and not assigned again yet
    generation = [0]
    flushing = asyncio.Lock()
    last_uplift_refresh = [0.0]
    # In Faust's set of unacknowledged messages while this handler holds records it has not
    # acknowledged (streams/worker/dispatch.py): a rebalance or a stop waits for them.
    unfinished: list[Unfinished | None] = [None]

    outputs = Outputs(worker)
    band = band_of(worker)
    send_now = outputs.send_now
    states_table = DurableStates(shell.store, outputs.batches)

    async def write_states(part: PartitionStates, customer_ids: Sequence[str]) -> None:
        # Outputs still queued here go to the producer first: the states taken now include
        # their records, so they must be delivered before the states are durable.
        await outputs.flush_now()
        items = shell.states_to_write(part.partition, customer_ids)
        # The context matters only for the per-record fallback (in a Faust transaction).
        with event_context(app, part.context):
            await states_table.add(part.partition, items)

    def ack(acks: Sequence[tuple[TP, int]]) -> None:
        by_tp: dict[TP, list[int]] = {}
        for tp, offset in acks:
            offsets = by_tp.get(tp)
            if offsets is None:
                offsets = by_tp[tp] = []
            offsets.append(offset)
        for tp, offsets in by_tp.items():
            ack_offsets(app.consumer, tp, offsets)

    def drained(partitions: list[int]) -> None:
        for partition in partitions:
            shell.evict(partition)
        now_s = time.monotonic()
        if now_s - last_uplift_refresh[0] >= UPLIFT_REFRESH_S:
            last_uplift_refresh[0] = now_s
            worker.uplift_gauges.update(worker.interventions.uplift)

    drain = WindowDrain(
        outputs.send_scores,
        write_states,
        ack,
        drained,
        DRAIN_CHUNK,
        states_table.settled,
        states_table.wait_settled,
    )
    last_arrival = [0.0]
    steps = ObservedSteps()  # counted per record, added to the metrics per list
    old_generations = OldGenerations()

    async def close_window() -> None:
        # The caller holds ``flushing``. One closed window is written at a time.
        if drain.pending:
            await drain.finish(generation[0])
        done, window[0] = window[0], Window()
        states = []
        for partition, last in done.last_event_of.items():
            # contact histories live in the customers' states: route them in first
            worker.interventions.flush(partition)
            states.append(PartitionStates(partition, last, shell.take_dirty(partition)))
        # Scores go to a compacted topic: each customer's latest of the window is enough.
        closed = Closed(done.acks, list(done.scores.values()), states, generation[0])
        drain.start(closed, time.monotonic())

    async def close_due_window() -> None:
        """Close the open window when it is due, once the previous one is written.

        While the previous window is still being written the open one stays open (and
        coalesces more), unless it has grown to twice its size: then the previous one is
        written at once (backpressure).
        """
        current = window[0]
        if not (current.acks or current.last_event_of):
            return
        if (
            len(current.acks) < FLUSH_MAX_RECORDS
            and time.monotonic() - current.started_s < FLUSH_EVERY_S
        ):
            return
        if drain.pending and len(current.acks) < 2 * FLUSH_MAX_RECORDS:
            return
        async with flushing:
            if window[0] is current:
                await close_window()

    async def decode(record: Any, topic: str, now: datetime) -> Event | None:
        try:
            return codec.decode_event(record.value or b"", topic=topic, now=now)
        except DecodeError as exc:
            worker.dead_letters += 1
            worker.metrics.dead_letter(exc.reason)
            headers = dead_letter_headers(record, exc, exc.reason)
            await dead_letters.send(key=record.key, value=record.value, headers=headers)
            return None

    def pending_of(partition: int) -> Callable[[int], bool]:
        # Whether a source topic's partition may still deliver records this agent has not
        # seen: the consumer's highwater (from its last fetch) is past the next offset.
        def pending(source: int) -> bool:
            tp = TP(source_topics[source], partition)
            highwater = app.consumer.highwater(tp)
            if highwater is None:
                return True
            next_offset = next_unseen.get(tp)
            if next_offset is None:
                # Faust's record of the committed offsets, set when it seeks on assignment.
                committed = getattr(app.consumer, "_committed_offset", {})
                next_offset = committed.get(tp) or 0
            return bool(next_offset < highwater)

        return pending

    async def release(partition: int, merge: PartitionMerge[Held]) -> None:
        released = merge.release(pending_of(partition), time.monotonic(), MERGE_MAX_WAIT_S)
        for source in released.gave_up:
            # Waited long enough: expect nothing more from it until a record arrives.
            tp = TP(source_topics[source], partition)
            highwater = app.consumer.highwater(tp)
            log.info(
                "merge gave up waiting for %s/%d: next %s, highwater %s",
                tp.topic,
                partition,
                next_unseen.get(tp),
                highwater,
            )
            next_unseen[tp] = max(next_unseen.get(tp, 0), highwater or 0)
        for held in released.items:
            if held.generation != generation[0]:
                return  # a rebalance happened while an earlier record was being sent
            window[0].acks.append((held.tp, held.record.offset))
            await process(held)

    async def receive(
        tp: TP, record: Any, source: int, now: datetime, arrival_s: float
    ) -> PartitionMerge[Held] | None:
        # Decode the record and add it to its partition's event-time merge (returned);
        # a bad record goes to the dead letters, one keyed otherwise is sent back re-keyed.
        received_in = generation[0]
        next_unseen[tp] = record.offset + 1
        decoded = await decode(record, input_names[tp.topic], now)
        if received_in != generation[0]:
            return None
        if decoded is None:
            window[0].acks.append((tp, record.offset))
            return None
        if (record.key or b"").decode("utf-8", "replace") != decoded.customer_id:
            # Keyed otherwise: re-key by customer so the customer's partition owns it.
            worker.repartitioned += 1
            worker.metrics.record_repartitioned()
            await resend[tp.topic].send(key=decoded.customer_id.encode(), value=record.value)
            window[0].acks.append((tp, record.offset))
            return None
        partition = tp.partition
        merge = merges.get(partition)
        if merge is None:
            merge = merges[partition] = PartitionMerge()
        held = Held(tp, record, decoded, source, arrival_s, received_in)
        merge.add(source, decoded.event_time.timestamp(), held)
        return merge

    async def process(held: Held) -> None:
        record, decoded = held.record, held.decoded
        partition = held.tp.partition
        skipped = shell.stats.replayed_skipped
        out = shell.on_event(decoded, partition, held.source, record.offset)
        # Re-delivered after a crash and already in the state: its own interventions were
        # routed (and recorded in the contact history) the first time; those of the timers
        # it made due again are routed now.
        replayed = shell.stats.replayed_skipped != skipped
        routed = worker.interventions.on_step(
            decoded, out, shell.state_of, partition, route_event=not replayed
        )
        routed.extend(
            worker.interventions.on_watermark(partition, shell.watermark_of(partition), band)
        )
        current = window[0]
        current.last_event_of[partition] = record
        seen_partitions[partition] = (record, held.arrival_s)
        for score in out.scores:
            current.scores[score.customer_id] = score
        await send_now(out, routed)
        observe(steps, out, decoded.event_time.timestamp(), held.arrival_s)

    async def score(lists: Lists) -> None:
        arrival_s = last_arrival[0] = time.monotonic()
        now = datetime.now(UTC)
        received_in = generation[0]
        count = 0
        for tp, records in lists:
            if tp not in owned:
                # The assignment signal may come after the first records (Faust resumes
                # the streams when recovery ends): ask the consumer before dropping records,
                # unless the partition was revoked and not assigned again yet (during a
                # rebalance the consumer still lists its old assignment).
                if tp in revoked or tp not in app.consumer.assignment():
                    continue
                owned.add(tp)
            if unfinished[0] is None:
                unfinished[0] = hold(app.consumer)  # a rebalance or a stop waits for our acks
            source = source_index[tp.topic]
            merge = None
            for record in records:
                added = await receive(tp, record, source, now, arrival_s)
                if generation[0] != received_in:
                    return  # revoked meanwhile: the rest comes again
                merge = added or merge
            count += len(records)
            if merge is not None:
                # The whole list is in the merge before it releases anything: it then
                # orders them with the partition's other topics in one pass.
                await release(tp.partition, merge)
                if generation[0] != received_in:
                    return
        await close_due_window()
        await drain_step(DRAIN_ITEMS_PER_RECORD * count)
        await outputs.flush_now()
        worker.metrics.observe_steps(steps)
        settle_unfinished()

    def settle_unfinished() -> None:
        # Nothing left to acknowledge: no rebalance or stop needs to wait for this handler.
        token = unfinished[0]
        if (
            token is not None
            and not window[0].acks
            and not drain.pending
            and not any(merge.held for merge in merges.values())
        ):
            unfinished[0] = None
            release_unfinished(app.consumer, token)

    add_batch_topic(app, inputs, score)

    def quiet() -> bool:
        return time.monotonic() - last_arrival[0] >= QUIET_CHECK_S

    async def drain_step(late_budget: int) -> None:
        # On pace, or ``late_budget`` once the pace's time is over. What was sent so far
        # goes to the producer first: a state taken now waits for it to be delivered.
        await outputs.flush_now()
        if not drain.pending:
            return
        now_s = time.monotonic()
        budget = drain.due(now_s, DRAIN_SPREAD_S)
        if drain.closed is not None and now_s - drain.closed.started_s >= DRAIN_SPREAD_S:
            budget = max(budget, late_budget)
        if budget > 0:
            async with flushing:
                await drain.advance(budget, generation[0])

    @app.timer(interval=QUIET_CHECK_S)  # type: ignore[untyped-decorator] # faust's is untyped
    async def flush_quiet_window() -> None:
        # Records held for the event-time merge go once their wait is over; a window that
        # is due closes here too when no record closes it; a closed window is written a
        # step at a time, all of it while no records arrive. Nothing here writes a whole
        # window at once: a record arriving meanwhile would wait for all of it.
        for partition, merge in list(merges.items()):
            if merge.held:
                await release(partition, merge)
        await close_due_window()
        await drain_step(DRAIN_ITEMS_PER_CHECK)
        while drain.pending and quiet():
            async with flushing:
                await drain.advance(DRAIN_ITEMS_PER_CHECK, generation[0])
            if drain.pending and not states_table.settled():
                # only the acknowledgements are left, and they wait for the broker
                await states_table.wait_settled()
            await asyncio.sleep(0)  # a record that arrives now is handled before the rest
        await outputs.flush_now()
        worker.metrics.observe_steps(steps)
        settle_unfinished()
        old_generations.tick(time.monotonic() - last_arrival[0] >= GC_QUIET_S)

    if settings.wall_grace_s is not None:

        @app.timer(interval=WALL_TICK_S)  # type: ignore[untyped-decorator] # faust's is untyped
        async def wall_tick() -> None:
            # Live mode: silence must raise risk even on a partition that gets no records. A
            # partition that does get records follows their event time: ticking it while a
            # backlog drains would wake customers whose older records are still queued.
            async with flushing:
                current = window[0]
                idle_since = time.monotonic() - WALL_TICK_S
                ticking = generation[0]
                for partition, (last, arrived_s) in list(seen_partitions.items()):
                    if generation[0] != ticking:
                        break  # revoked while sending: these partitions may be someone else's
                    if arrived_s > idle_since:
                        continue
                    out = shell.on_wall_tick(partition, time.time())
                    routed = worker.interventions.on_watermark(
                        partition, shell.watermark_of(partition), band
                    )
                    if out.scores or routed.deliver:
                        current.last_event_of.setdefault(partition, last)
                    for score in out.scores:
                        current.scores[score.customer_id] = score
                    await send_now(out, routed)
            await close_due_window()
            await outputs.flush_now()

    @app.on_partitions_revoked.connect
    def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Unflushed records are re-delivered from the committed offsets after the
        # rebalance: forget their unwritten effects and do not acknowledge them.
        generation[0] += 1
        revoked.update(args[0] if args else kwargs.get("revoked", set()))
        revoked.update(owned)
        owned.clear()
        window[0] = Window()
        drain.drop()
        states_table.drop()
        seen_partitions.clear()
        merges.clear()
        next_unseen.clear()
        if unfinished[0] is not None:
            release_unfinished(app.consumer, unfinished[0])  # they come again: nothing to wait for
            unfinished[0] = None
        shell.forget_partitions()
        worker.interventions.forget_partitions()

    @app.on_partitions_assigned.connect
    def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", set())
        owned.clear()
        owned.update(tp for tp in assigned if tp.topic in source_index)
        revoked.clear()

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await worker.delivery.stop()

    @app.task  # type: ignore[untyped-decorator] # faust's task decorator is untyped
    async def watch_models() -> None:
        await follow_models(worker, models_topic_name=settings.topic("churn-models"))

    @app.task  # type: ignore[untyped-decorator] # faust's task decorator is untyped
    async def start_delivery() -> None:
        await worker.delivery.start()

    if settings.train:

        @app.agent(examples, name="train")
        async def train(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
            await worker.models_ready.wait()
            worker.trainer.start_from(worker.models.latest_learnable)
            async for value in stream:
                try:
                    snapshot = worker.trainer.learn(value, datetime.now(UTC))
                except DecodeError as exc:
                    log.warning("trainer skipped an undecodable example: %s", exc)
                    continue
                if worker.trainer.last is not None:
                    worker.metrics.label_learned(*worker.trainer.last)
                if snapshot is not None:
                    await models_topic.send(key=b"model", value=snapshot)
                yield None
