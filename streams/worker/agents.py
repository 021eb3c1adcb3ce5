"""The Faust agents: decode, call the plain shells, send. Nothing else happens here.

The scoring handler takes the input topics' records as lists straight from the consumer's
fetch (``streams/worker/dispatch.py``: no per-record Faust ``Event``, channel queue or
stream), holds them in their partition's event-time merge (``streams/worker/intake.py``) and
processes each as the merge lets it go. Like Kafka Streams' record cache, the customer states
a record changed, and the scores of the compacted scores topic, are written once per customer
per flush window, and the window's records are acknowledged only after that write
(``streams/worker/windows.py``). Offsets are committed only for acknowledged records, so a
crash re-delivers exactly the records whose state was not written; the per-customer input
offsets in the state make a re-delivered record that *was* applied a no-op.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import faust
from faust.types import TP

from streams.core.merge import PartitionMerge
from streams.errors import DecodeError
from streams.metrics import ObservedSteps
from streams.settings import INPUT_TOPICS
from streams.worker.dispatch import Lists, Unfinished, add_batch_topic, hold
from streams.worker.dispatch import release as release_unfinished
from streams.worker.gc_policy import OldGenerations
from streams.worker.intake import Held, Intake, Received
from streams.worker.model_feed import follow_models
from streams.worker.outputs import Outputs, band_of, observe
from streams.worker.windows import WindowWriter

if TYPE_CHECKING:
    from streams.worker.app import Worker

log = logging.getLogger(__name__)
# How often the quiet-window timer looks for a window to close and held records to release.
QUIET_CHECK_S = 0.1
# Past its pace, a closed window is written at no less than this many items per record
# (streams/worker/windows.py).
DRAIN_ITEMS_PER_RECORD = 4
# The most the quiet-window timer writes of a closed window in one step (a few ms): once per
# check when the pace is behind, step after step while no records arrive.
DRAIN_ITEMS_PER_CHECK = 250
WALL_TICK_S = 1.0
# Records must have stopped this long for a full garbage collection to run early
# (streams/worker/gc_policy.py).
GC_QUIET_S = 1.0


def _raw(app: faust.App, name: str) -> Any:
    return app.topic(name, key_serializer="raw", value_serializer="raw", internal=False)


def wire_agents(worker: Worker) -> None:
    """Declare every agent, task and signal handler of ``worker``'s app."""
    app, settings, shell = worker.app, worker.settings, worker.shell
    input_names = {settings.topic(name): name for name in INPUT_TOPICS}
    source_index = {full: index for index, full in enumerate(input_names)}
    inputs = app.topic(*input_names, key_serializer="raw", value_serializer="raw")
    examples = _raw(app, settings.topic("training-examples"))
    models_topic = _raw(app, settings.topic("churn-models"))
    dead_letters = _raw(app, settings.topic("dead-letters"))
    resend = {full: _raw(app, full) for full in input_names}
    # The latest record of each partition (its context lets timers write that partition), and
    # when it arrived.
    seen_partitions: dict[int, tuple[Any, float]] = {}
    # Input partitions this worker owns; records of others still in Faust's buffers after a
    # rebalance are left for their new owner (not processed, not acknowledged). The
    # generation changes at every revoke: records received before it are dropped too.
    owned: set[TP] = set()
    revoked: set[TP] = set()  # revoked and not assigned again yet
    generation = [0]

    def current_generation() -> int:
        return generation[0]

    # In Faust's set of unacknowledged messages while this handler holds records it has not
    # acknowledged (streams/worker/dispatch.py): a rebalance or a stop waits for them.
    unfinished: list[Unfinished | None] = [None]

    outputs = Outputs(worker)
    band = band_of(worker)
    send_now = outputs.send_now
    intake = Intake(worker, input_names, dead_letters, resend, current_generation)
    writer = WindowWriter(worker, outputs, current_generation)
    last_arrival = [0.0]
    steps = ObservedSteps()  # counted per record, added to the metrics per list
    old_generations = OldGenerations()

    async def release(partition: int, merge: PartitionMerge[Held]) -> None:
        for held in intake.release(partition, merge, app.consumer):
            if held.generation != generation[0]:
                return  # a rebalance happened while an earlier record was being sent
            writer.window.acks.append((held.tp, held.record.offset))
            await process(held)

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
        current = writer.window
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
            held_any = False
            for record in records:
                received = await intake.receive(tp, record, source, now, arrival_s)
                if generation[0] != received_in:
                    return  # revoked meanwhile: the rest comes again
                if received is Received.DONE:
                    writer.window.acks.append((tp, record.offset))
                held_any = held_any or received is Received.HELD
            count += len(records)
            if held_any:
                # The whole list is in the merge before it releases anything: it then
                # orders them with the partition's other topics in one pass.
                await release(tp.partition, intake.merges[tp.partition])
                if generation[0] != received_in:
                    return
        # The list's risk changes and interventions leave before the window's writing.
        await outputs.push_now()
        await writer.close_due()
        await writer.step(DRAIN_ITEMS_PER_RECORD * count)
        await outputs.push_now()  # again before the next list: a push may have given up
        worker.metrics.observe_steps(steps)
        settle_unfinished()

    def settle_unfinished() -> None:
        # Nothing left to acknowledge: no rebalance or stop needs to wait for this handler.
        token = unfinished[0]
        if token is not None and writer.idle() and not intake.holds_any():
            unfinished[0] = None
            release_unfinished(app.consumer, token)

    add_batch_topic(app, inputs, score)

    def quiet() -> bool:
        return time.monotonic() - last_arrival[0] >= QUIET_CHECK_S

    @app.timer(interval=QUIET_CHECK_S)  # type: ignore[untyped-decorator] # faust's is untyped
    async def flush_quiet_window() -> None:
        # Records held for the event-time merge go once their wait is over; a window that
        # is due closes here too when no record closes it; a closed window is written a
        # step at a time, all of it while no records arrive. Nothing here writes a whole
        # window at once: a record arriving meanwhile would wait for all of it.
        for partition, merge in intake.waiting():
            await release(partition, merge)
        await writer.close_due()
        await writer.step(DRAIN_ITEMS_PER_CHECK)
        await writer.write_while(quiet, DRAIN_ITEMS_PER_CHECK)
        await outputs.push_now()
        worker.metrics.observe_steps(steps)
        settle_unfinished()
        old_generations.tick(time.monotonic() - last_arrival[0] >= GC_QUIET_S)

    if settings.wall_grace_s is not None:

        @app.timer(interval=WALL_TICK_S)  # type: ignore[untyped-decorator] # faust's is untyped
        async def wall_tick() -> None:
            # Live mode: silence must raise risk even on a partition that gets no records. A
            # partition that does get records follows their event time: ticking it while a
            # backlog drains would wake customers whose older records are still queued.
            async with writer.flushing:
                current = writer.window
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
            await writer.close_due()
            await outputs.push_now()  # its risk changes, before the handler's next list

    @app.on_partitions_revoked.connect
    def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Unflushed records are re-delivered from the committed offsets after the
        # rebalance: forget their unwritten effects and do not acknowledge them.
        generation[0] += 1
        revoked.update(args[0] if args else kwargs.get("revoked", set()))
        revoked.update(owned)
        owned.clear()
        writer.drop()
        seen_partitions.clear()
        intake.forget()
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
