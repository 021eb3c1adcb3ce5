"""Flush windows: what the records of the last second changed, written once per customer.

Like Kafka Streams' record cache: each record is processed at once (risk changes, training
examples and interventions are sent right away), but the customer states it changed, and the
scores of the compacted scores topic, are written once per customer per window, and the
window's records are acknowledged only after that write. A closed window is written in steps
(``streams/worker/draining.py``) while the next one fills.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import faust
from faust.events import Event as FaustEvent
from faust.streams import _current_event
from faust.types import TP

from streams.core.records import ChurnScore
from streams.worker.dispatch import ack_offsets
from streams.worker.draining import Closed, PartitionStates, WindowDrain
from streams.worker.outputs import Outputs
from streams.worker.state_writes import DurableStates

if TYPE_CHECKING:
    from streams.worker.app import Worker

# Uplift gauges are cheap to read but iterate every segment: refresh them at most this often.
UPLIFT_REFRESH_S = 5.0
# A flush window ends after this many records or this long, whichever comes first. Longer
# windows coalesce more writes of a customer (a session's clicks) into one state write and one
# score; bench/run.py's input needs 0.6 writes per record at 100 ms, 0.3 at 1 s. Risk
# changes, interventions and training examples do not wait for the window.
FLUSH_MAX_RECORDS = 10_000
FLUSH_EVERY_S = 1.0
# A closed window is written in steps after each list of records and at each quiet-window
# check, paced to end this long after it closed (streams/worker/draining.py): a score or a
# state is one item (~10-20 µs), an ack an eighth. Past that time the steps go on at no less
# than the caller's late budget.
DRAIN_SPREAD_S = 0.6
# Scores and states per produce batch and RocksDB batch.
DRAIN_CHUNK = 256
# Cached states dropped per step once a window is written (ScoringShell.evict): ~0.7 ms.
EVICT_PER_STEP = 500


@dataclass(slots=True)
class Window:
    """Records processed since the last flush, and what waits for the flush."""

    acks: list[tuple[TP, int]] = field(default_factory=list)  # (partition, offset) to ack
    last_event_of: dict[int, Any] = field(default_factory=dict)
    scores: dict[str, ChurnScore] = field(default_factory=dict)
    started_s: float = field(default_factory=time.monotonic)


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


class WindowWriter:
    """The open window, the closed one being written, and the lock that orders the two.

    ``generation`` returns the caller's rebalance generation: a window of an older one is
    dropped, never written.
    """

    def __init__(self, worker: Worker, outputs: Outputs, generation: Callable[[], int]) -> None:
        self.worker = worker
        self.app = worker.app
        self.shell = worker.shell
        self.outputs = outputs
        self.generation = generation
        self.window = Window()
        self.flushing = asyncio.Lock()
        self.states = DurableStates(worker.shell.store, outputs.batches)
        self.drain = WindowDrain(
            outputs.send_scores,
            self._write_states,
            self._ack,
            self._drained,
            DRAIN_CHUNK,
            self.states.settled,
            self.states.wait_settled,
        )
        self._last_uplift_refresh = 0.0
        # partitions whose cache is to be brought back to its share, a step at a time
        self._evicting: dict[int, None] = {}

    def idle(self) -> bool:
        """Whether nothing waits to be written or acknowledged."""
        return not self.window.acks and not self.drain.pending

    def drop(self) -> None:
        """Forget the open and the closed window (a rebalance: their records come again)."""
        self.window = Window()
        self.drain.drop()
        self.states.drop()
        self._evicting.clear()

    async def close_due(self) -> None:
        """Close the open window when it is due, once the previous one is written.

        While the previous window is still being written the open one stays open (and
        coalesces more), unless it has grown to twice its size: then the previous one is
        written at once (backpressure).
        """
        current = self.window
        if not (current.acks or current.last_event_of):
            return
        if (
            len(current.acks) < FLUSH_MAX_RECORDS
            and time.monotonic() - current.started_s < FLUSH_EVERY_S
        ):
            return
        if self.drain.pending and len(current.acks) < 2 * FLUSH_MAX_RECORDS:
            return
        async with self.flushing:
            if self.window is current:
                await self._close()

    async def step(self, late_budget: int) -> None:
        """Write the next part of the closed window that is due.

        On pace, or ``late_budget`` items once the pace's time is over. What was sent so far
        goes to the producer first: a state taken now waits for it to be delivered.
        """
        await self.outputs.flush_now()
        if self._evicting:
            self._evict_some(EVICT_PER_STEP)
        drain = self.drain
        if not drain.pending:
            return
        now_s = time.monotonic()
        budget = drain.due(now_s, DRAIN_SPREAD_S)
        if drain.closed is not None and now_s - drain.closed.started_s >= DRAIN_SPREAD_S:
            budget = max(budget, late_budget)
        if budget > 0:
            async with self.flushing:
                await drain.advance(budget, self.generation())

    async def write_while(self, quiet: Callable[[], bool], items_per_step: int) -> None:
        """Write the closed window a step at a time while ``quiet()`` (no records arrive)."""
        drain = self.drain
        while drain.pending and quiet():
            async with self.flushing:
                await drain.advance(items_per_step, self.generation())
            if drain.pending and not self.states.settled():
                # only the acknowledgements are left, and they wait for the broker
                await self.states.wait_settled()
            await asyncio.sleep(0)  # a record that arrives now is handled before the rest

    async def _close(self) -> None:
        # The caller holds ``flushing``. One closed window is written at a time.
        if self.drain.pending:
            await self.drain.finish(self.generation())
        done, self.window = self.window, Window()
        states = []
        for partition, last in done.last_event_of.items():
            # contact histories live in the customers' states: route them in first
            self.worker.interventions.flush(partition)
            states.append(PartitionStates(partition, last, self.shell.take_dirty(partition)))
        # Scores go to a compacted topic: each customer's latest of the window is enough.
        closed = Closed(done.acks, list(done.scores.values()), states, self.generation())
        self.drain.start(closed, time.monotonic())

    async def _write_states(self, part: PartitionStates, customer_ids: Sequence[str]) -> None:
        # Outputs still queued here go to the producer first: the states taken now include
        # their records, so they must be delivered before the states are durable.
        await self.outputs.flush_now()
        items = self.shell.states_to_write(part.partition, customer_ids)
        # The context matters only for the per-record fallback (in a Faust transaction).
        with event_context(self.app, part.context):
            await self.states.add(part.partition, items)

    def _ack(self, acks: Sequence[tuple[TP, int]]) -> None:
        by_tp: dict[TP, list[int]] = {}
        for tp, offset in acks:
            offsets = by_tp.get(tp)
            if offsets is None:
                offsets = by_tp[tp] = []
            offsets.append(offset)
        for tp, offsets in by_tp.items():
            ack_offsets(self.app.consumer, tp, offsets)

    def _evict_some(self, limit: int) -> None:
        partition = next(iter(self._evicting))  # one partition at a time, in turn
        if self.shell.evict(partition, limit):
            del self._evicting[partition]

    def _drained(self, partitions: list[int]) -> None:
        # The written states may leave the cache now, a step at a time (step()).
        self._evicting.update(dict.fromkeys(partitions))
        now_s = time.monotonic()
        if now_s - self._last_uplift_refresh >= UPLIFT_REFRESH_S:
            self._last_uplift_refresh = now_s
            self.worker.uplift_gauges.update(self.worker.interventions.uplift)
