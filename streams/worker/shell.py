"""What a scoring worker does per partition, with no Faust inside: watermarks, timers, steps.

The Faust agent hands decoded events (with their partition) to :class:`ScoringShell`, which
keeps the states it touched in memory, runs the pure core, and returns the outputs to send.
States are written back to the store (the Faust table, whose every write is a changelog
record) once per customer per batch by :meth:`ScoringShell.flush`: a customer with ten events
in a batch costs one changelog write, as Kafka Streams' record cache does. Timers are per
partition so a partition's watermark only wakes customers that partition owns.

After a restart or a rebalance the watermark starts from nothing and follows the records
delivered again from the committed offsets, including those whose effect is already stored:
it then wakes the same customers at the same points of the stream as the first time. (A
watermark taken from the stored states would be ahead of those records whenever a state was
stored after later records than the committed offset: timers would fire before events they
came after, and the customer's clock would pass the event times.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

from streams.core.clock import TimerIndex, Watermark
from streams.core.config import ScoringConfig
from streams.core.events import Event
from streams.core.model import ChurnModel
from streams.core.records import to_s
from streams.core.scoring import StepOutput, process_event, process_timer
from streams.core.state import STATE_FIELDS, STATE_VERSION, CustomerState

StateStore = MutableMapping[str, Any]


@dataclass(slots=True)
class PartitionClock:
    """The watermark, the timer index and the write-back cache of one partition."""

    watermark: Watermark
    timers: TimerIndex
    cache: dict[str, CustomerState] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    writing: set[str] = field(default_factory=set)  # taken by take_dirty, not yet written


@dataclass(slots=True)
class ShellStats:
    """Counters the worker exposes as metrics."""

    events: int = 0
    replayed_skipped: int = 0
    timer_wakes: int = 0
    rebuilt_customers: int = 0
    state_writes: int = 0


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
        max_cached: int = 10_000,
        scan: Callable[[], Iterable[tuple[int, str, Any]]] | None = None,
        read: Callable[[str], Any] | None = None,
    ) -> None:
        """``scan``, if given, yields (partition, customer id, stored value) of every stored
        state of the partitions owned, faster than iterating ``store`` (the worker's reads
        the table's per-partition RocksDB directly, with no partition hashing). ``read``, if
        given, returns a customer's stored value (None if there is none) faster than
        ``store.get`` (the worker's reads the customer's partition only)."""
        self.scan = scan
        self.store = store
        self.read: Callable[[str], Any] = store.get if read is None else read
        self.config = config
        self.model = model
        self.partition_of = partition_of
        self.timer_bucket_s = timer_bucket_s
        self.wall_grace_s = wall_grace_s
        self.max_cached = max_cached
        self.clocks: dict[int, PartitionClock] = {}
        self.rebuilt_contacts: dict[int, list[tuple[str, Any]]] = {}
        self.stats = ShellStats()

    def forget_partitions(self) -> None:
        """Drop every partition clock and cache; they are rebuilt from the store on next use.

        Call it only between batches (after :meth:`flush`), as on a rebalance.
        """
        self.clocks.clear()
        self.rebuilt_contacts.clear()

    def _clock(self, partition: int) -> PartitionClock:
        clock = self.clocks.get(partition)
        if clock is None:
            self._rebuild()
            clock = self.clocks.get(partition)
            if clock is None:  # the store holds nobody of this partition yet
                clock = self.clocks[partition] = self._empty_clock()
        return clock

    def _empty_clock(self) -> PartitionClock:
        return PartitionClock(
            Watermark(grace_s=self.wall_grace_s or 0.0), TimerIndex(self.timer_bucket_s)
        )

    def _rebuild(self) -> None:
        """Rebuild, in one pass over the store, the clock of every partition without one.

        Partitions that have a clock are live (their cache may be ahead of the store): they
        are left alone.
        """
        fresh: dict[int, PartitionClock] = {}
        contacts: dict[int, list[tuple[str, Any]]] = {}
        for partition, customer_id, raw in self._stored():
            if partition in self.clocks:
                continue
            clock = fresh.get(partition)
            if clock is None:
                clock = fresh[partition] = self._empty_clock()
                contacts[partition] = []
            clock.timers.schedule(customer_id, float(stored_field(raw, NEXT_WAKE)))
            history = stored_field(raw, CONTACTS)
            if history:
                contacts[partition].append((customer_id, history))
            self.stats.rebuilt_customers += 1
        self.clocks.update(fresh)
        # Kept for the intervention shell's own rebuild (one pass serves both).
        self.rebuilt_contacts.update(contacts)

    def _stored(self) -> Iterable[tuple[int, str, Any]]:
        """Yield (partition, customer id, stored value) of every stored state."""
        if self.scan is not None:
            return self.scan()
        return ((self.partition_of(cid), cid, raw) for cid, raw in self.store.items())

    def _load(self, clock: PartitionClock, customer_id: str) -> CustomerState | None:
        state = clock.cache.get(customer_id)
        if state is None:
            raw = self.read(customer_id)
            if raw is None:
                return None
            state = CustomerState.from_dict(raw)
            clock.cache[customer_id] = state
        return state

    def on_event(
        self, event: Event, partition: int, source: int | None = None, offset: int = -1
    ) -> StepOutput:
        """Return the outputs of ``event`` and of the timers it makes due on ``partition``.

        ``source`` (index of the input topic) and ``offset`` identify the record: one the
        customer's state has applied already (re-delivered after a crash) changes nothing.
        """
        clock = self._clock(partition)
        model = self.model()
        state = self._load(clock, event.customer_id)
        if source is not None and state is not None and offset <= state.input_offsets[source]:
            # Its effect on the customer is stored, but the partition's watermark moved on
            # with it the first time, and other customers' timers fired then: they fire now
            # at the same point of the stream (those whose effect is stored are not due).
            self.stats.replayed_skipped += 1
            watermark_s = clock.watermark.observe(to_s(event.event_time))
            return self._fire(clock, watermark_s, model)
        state, out = process_event(state, event, model, self.config)
        if source is not None:
            state.input_offsets[source] = offset
        self._touch(state, clock)
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
            state = self._load(clock, customer_id)
            if state is None:
                continue
            state, step = process_timer(state, watermark_s, model, self.config)
            self._touch(state, clock)
            self.stats.timer_wakes += 1
            out.extend(step)
        return out

    def _touch(self, state: CustomerState, clock: PartitionClock) -> None:
        # re-inserted at the end: the cache's order is the order of last change (for eviction)
        clock.cache.pop(state.customer_id, None)
        clock.cache[state.customer_id] = state
        clock.dirty.add(state.customer_id)
        clock.timers.schedule(state.customer_id, state.next_wake_s)

    def flush(self, partition: int) -> int:
        """Write each state changed since the last flush once; return how many were written.

        The caller runs this in the context of an event of ``partition`` (Faust tables take
        the changelog partition from the current event).
        """
        written = self.write(partition, self.take_dirty(partition))
        self.evict(partition)
        return written

    def take_dirty(self, partition: int) -> list[str]:
        """Return the customers of ``partition`` changed since the last call, and forget them.

        Write them with :meth:`write` (in chunks, if wanted); until then they stay cached.
        """
        clock = self.clocks.get(partition)
        if clock is None or not clock.dirty:
            return []
        dirty = list(clock.dirty)
        clock.dirty.clear()
        clock.writing.update(dirty)
        return dirty

    def write(self, partition: int, customer_ids: Iterable[str]) -> int:
        """Write the current states of ``customer_ids`` (taken by :meth:`take_dirty`)."""
        items = self.states_to_write(partition, customer_ids)
        for customer_id, value in items:
            self.store[customer_id] = value
        return len(items)

    def states_to_write(
        self, partition: int, customer_ids: Iterable[str]
    ) -> list[tuple[str, dict[str, Any]]]:
        """Return the current states of ``customer_ids`` (taken by :meth:`take_dirty`) as
        ``(customer id, stored form)``, counted as written: the caller writes them all."""
        clock = self.clocks.get(partition)
        if clock is None:
            return []  # forgotten (a rebalance): the records come again
        items = []
        for customer_id in customer_ids:
            state = clock.cache.get(customer_id)
            clock.writing.discard(customer_id)
            if state is not None:
                items.append((customer_id, state.to_dict()))
        self.stats.state_writes += len(items)
        return items

    def evict(self, partition: int, limit: int | None = None) -> bool:
        """Drop the least recently changed states beyond the partition's share of the cache.

        Everything written is persisted, so a dropped state is read back on demand; states
        changed but not yet written stay. A small cache is enough (a customer's records come
        in sessions: 5,000 states miss 1.2 % of bench/run.py's records) and keeps the
        garbage collector's full collections short: they cost about 1 µs per tracked
        object, ~5 per cached state. ``limit`` drops at most that many: freeing a state
        takes ~1.4 µs, so a window of 5,000 new customers dropped at once stops the worker
        for ~7 ms. Returns whether the partition is done (nothing more can be dropped now).
        """
        clock = self.clocks.get(partition)
        if clock is None:
            return True
        floor = min(1_000, self.max_cached)  # many partitions: each keeps a useful share
        share = max(floor, self.max_cached // max(1, len(self.clocks)))
        excess = len(clock.cache) - share
        if excess <= 0:
            return True
        wanted = excess if limit is None else min(excess, limit)
        dirty, writing = clock.dirty, clock.writing
        drop: list[str] = []
        for customer_id in clock.cache:  # least recently changed first
            if customer_id not in dirty and customer_id not in writing:
                drop.append(customer_id)
                if len(drop) >= wanted:
                    break
        cache = clock.cache
        for customer_id in drop:
            del cache[customer_id]
        return len(drop) < wanted or wanted == excess

    def state_of(self, customer_id: str) -> CustomerState | None:
        """Return the current state of ``customer_id`` (cached or stored), None if unseen."""
        clock = self.clocks.get(self.partition_of(customer_id))
        if clock is not None and customer_id in clock.cache:
            return clock.cache[customer_id]
        raw = self.read(customer_id)
        return None if raw is None else CustomerState.from_dict(raw)

    def contacts_of(self, customer_id: str) -> dict[str, Any] | None:
        """Return the stored contact history of ``customer_id`` (None if there is none)."""
        state = self.state_of(customer_id)
        return None if state is None else state.contacts

    def set_contacts(self, customer_id: str, contacts: dict[str, Any]) -> None:
        """Store ``contacts`` in the customer's state; it is written with the next flush."""
        clock = self._clock(self.partition_of(customer_id))
        state = self._load(clock, customer_id)
        if state is None:
            return
        state.contacts = contacts
        clock.dirty.add(customer_id)

    def contact_items(self) -> list[tuple[str, dict[str, Any]]]:
        """Return (customer id, contact history) of every stored customer that has one."""
        found = []
        for partition, customer_id, raw in self._stored():
            clock = self.clocks.get(partition)
            cached = None if clock is None else clock.cache.get(customer_id)
            contacts = stored_field(raw, CONTACTS) if cached is None else cached.contacts
            if contacts is not None:
                found.append((customer_id, contacts))
        return found

    def partition_contacts(self, partition: int) -> list[tuple[str, Any]]:
        """Return (customer id, contact history) of ``partition``'s customers that have one.

        Right after the partition's timers were rebuilt this comes from that same pass over
        the store; otherwise it is a pass of its own.
        """
        self._clock(partition)
        found = self.rebuilt_contacts.pop(partition, None)
        if found is None:
            return [
                (cid, contacts)
                for cid, contacts in self.contact_items()
                if self.partition_of(cid) == partition
            ]
        cache = self.clocks[partition].cache
        merged = {cid: contacts for cid, contacts in found if cid not in cache}
        for cid, state in cache.items():  # cached states may be newer than the store
            if state.contacts:
                merged[cid] = state.contacts
        return list(merged.items())

    def watermark_of(self, partition: int) -> float:
        """Return the watermark of ``partition`` (epoch seconds; -inf before any event)."""
        return self._clock(partition).watermark.current_s

    def states(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        """Return the current states of ``customer_ids`` that exist."""
        found = {}
        for customer_id in customer_ids:
            state = self.state_of(customer_id)
            if state is not None:
                found[customer_id] = state
        return found


NEXT_WAKE: Final[int] = STATE_FIELDS.index("next_wake_s")
CLOCK: Final[int] = STATE_FIELDS.index("clock_s")
CONTACTS: Final[int] = STATE_FIELDS.index("contacts")


def stored_field(raw: Any, index: int) -> Any:
    """Return field ``index`` (of ``STATE_FIELDS``) of a stored state without decoding it all.

    A rebuild after a restart reads every stored state: it needs two or three fields of
    each, not a whole :class:`CustomerState`. Anything that is not a current-version state
    goes through :meth:`CustomerState.from_dict`, which raises on what it cannot read.
    """
    if isinstance(raw, dict) and raw.get("v") == STATE_VERSION:
        values = raw.get("values")
        if isinstance(values, list) and len(values) == len(STATE_FIELDS):
            return values[index]
    return getattr(CustomerState.from_dict(raw), STATE_FIELDS[index])
