"""What a scoring worker does per partition, with no Faust inside: watermarks, timers, steps.

The Faust agent hands each decoded event (with its partition) to :class:`ScoringShell`, which
reads and writes customer states through a mapping (the Faust table in the worker, a dict in
tests), runs the pure core, and returns the outputs to send. Timers are per partition so a
partition's watermark only wakes customers that partition owns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from streams.core.clock import TimerIndex, Watermark
from streams.core.config import ScoringConfig
from streams.core.events import Event
from streams.core.model import ChurnModel
from streams.core.records import to_s
from streams.core.scoring import StepOutput, process_event, process_timer
from streams.core.state import CustomerState

StateStore = MutableMapping[str, Any]


@dataclass(slots=True)
class PartitionClock:
    """The watermark and the timer index of one partition."""

    watermark: Watermark
    timers: TimerIndex


@dataclass(slots=True)
class ShellStats:
    """Counters the worker exposes as metrics."""

    events: int = 0
    timer_wakes: int = 0
    rebuilt_customers: int = 0
    outputs: dict[str, int] = field(default_factory=dict)


class ScoringShell:
    """Runs the scoring core for the partitions a worker owns."""

    def __init__(
        self,
        store: StateStore,
        config: ScoringConfig,
        model: Callable[[], ChurnModel],
        partition_of: Callable[[str], int],
        timer_bucket_s: float = 3600.0,
        wall_grace_s: float | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.model = model
        self.partition_of = partition_of
        self.timer_bucket_s = timer_bucket_s
        self.wall_grace_s = wall_grace_s
        self.clocks: dict[int, PartitionClock] = {}
        self.stats = ShellStats()

    def forget_partitions(self) -> None:
        """Drop every partition clock; they are rebuilt from the store on next use."""
        self.clocks.clear()

    def _clock(self, partition: int) -> PartitionClock:
        clock = self.clocks.get(partition)
        if clock is None:
            clock = self._rebuild(partition)
            self.clocks[partition] = clock
        return clock

    def _rebuild(self, partition: int) -> PartitionClock:
        """Return the clock of ``partition`` rebuilt from the states the store holds for it."""
        timers = TimerIndex(self.timer_bucket_s)
        watermark = Watermark(grace_s=self.wall_grace_s or 0.0)
        for customer_id, raw in list(self.store.items()):
            if self.partition_of(customer_id) != partition:
                continue
            state = CustomerState.from_dict(raw)
            timers.schedule(customer_id, state.next_wake_s)
            watermark.observe(state.clock_s)
            self.stats.rebuilt_customers += 1
        return PartitionClock(watermark, timers)

    def on_event(self, event: Event, partition: int) -> StepOutput:
        """Return the outputs of ``event`` and of the timers it makes due on ``partition``."""
        clock = self._clock(partition)
        raw = self.store.get(event.customer_id)
        state = None if raw is None else CustomerState.from_dict(raw)
        model = self.model()
        state, out = process_event(state, event, model, self.config)
        self._save(state, clock)
        self.stats.events += 1
        watermark_s = clock.watermark.observe(to_s(event.event_time))
        out.extend(self._fire(clock, watermark_s, model))
        return out

    def on_wall_tick(self, partition: int, wall_time_s: float) -> StepOutput:
        """Return the outputs of timers due on ``partition`` at a live-mode wall-clock tick."""
        clock = self._clock(partition)
        if self.wall_grace_s is None:
            return StepOutput()
        watermark_s = clock.watermark.tick_wall(wall_time_s)
        return self._fire(clock, watermark_s, self.model())

    def _fire(self, clock: PartitionClock, watermark_s: float, model: ChurnModel) -> StepOutput:
        out = StepOutput()
        for _, customer_id in clock.timers.pop_due(watermark_s):
            raw = self.store.get(customer_id)
            if raw is None:
                continue
            state, step = process_timer(
                CustomerState.from_dict(raw), watermark_s, model, self.config
            )
            self._save(state, clock)
            self.stats.timer_wakes += 1
            out.extend(step)
        return out

    def _save(self, state: CustomerState, clock: PartitionClock) -> None:
        self.store[state.customer_id] = state.to_dict()
        clock.timers.schedule(state.customer_id, state.next_wake_s)

    def state_of(self, customer_id: str) -> CustomerState | None:
        """Return the stored state of ``customer_id``, or None if it was never seen."""
        raw = self.store.get(customer_id)
        return None if raw is None else CustomerState.from_dict(raw)

    def watermark_of(self, partition: int) -> float:
        """Return the watermark of ``partition`` (epoch seconds; -inf before any event)."""
        return self._clock(partition).watermark.current_s

    def states(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        """Return the stored states of ``customer_ids`` that exist."""
        found = {}
        for customer_id in customer_ids:
            raw = self.store.get(customer_id)
            if raw is not None:
                found[customer_id] = CustomerState.from_dict(raw)
        return found
