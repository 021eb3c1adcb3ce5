"""Event-time clock of a partition (the watermark) and its index of customer timers.

Times are epoch seconds (floats). Nothing here reads the wall clock: live mode passes the
wall time in, replay never does, so both see the same event-time behaviour.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable


class Watermark:
    """The partition's notion of "now": max event time seen, or wall time minus grace if later.

    >>> mark = Watermark(grace_s=60.0)
    >>> mark.observe(1000.0), mark.observe(900.0), mark.tick_wall(2000.0)
    (1000.0, 1000.0, 1940.0)
    """

    __slots__ = ("_current_s", "grace_s", "max_event_s")

    def __init__(self, grace_s: float = 0.0, start_s: float = -math.inf) -> None:
        self.grace_s = grace_s
        self.max_event_s = start_s
        self._current_s = start_s

    @property
    def current_s(self) -> float:
        """Return the watermark in epoch seconds (``-inf`` before anything was seen)."""
        return self._current_s

    def observe(self, event_time_s: float) -> float:
        """Return the watermark after seeing an event at ``event_time_s`` (never moves back)."""
        self.max_event_s = max(self.max_event_s, event_time_s)
        self._current_s = max(self._current_s, event_time_s)
        return self._current_s

    def tick_wall(self, wall_time_s: float) -> float:
        """Return the watermark after a live-mode tick at wall time ``wall_time_s``.

        Silence must raise risk even when no events arrive at all, so live workers let the
        wall clock (minus a grace for late events) push the watermark forward.
        """
        candidate = wall_time_s - self.grace_s
        self._current_s = max(self._current_s, candidate)
        return self._current_s

    def advance_to(self, when_s: float) -> float:
        """Return the watermark after forcing it forward to ``when_s`` (replay's final as-of)."""
        self._current_s = max(self._current_s, when_s)
        return self._current_s


class TimerIndex:
    """Which customers are due when: buckets of due times so a tick costs O(customers due).

    Each customer has at most one timer (its state's ``next_wake_s``); scheduling again
    replaces it. After a restart the index is rebuilt from the states with :meth:`rebuild`.

    >>> timers = TimerIndex(bucket_s=10)
    >>> timers.schedule("b", 15.0); timers.schedule("a", 15.0); timers.schedule("c", 99.0)
    >>> timers.pop_due(20.0)
    [(15.0, 'a'), (15.0, 'b')]
    >>> len(timers), timers.due_time("c")
    (1, 99.0)
    """

    __slots__ = (
        "_bucket_s",
        "_buckets",
        "_current",
        "_current_bucket",
        "_due",
        "_heap",
        "_in_heap",
    )

    def __init__(self, bucket_s: float = 60.0) -> None:
        if bucket_s <= 0:
            raise ValueError(f"bucket_s must be positive, got {bucket_s!r}")
        self._bucket_s = bucket_s
        self._due: dict[str, float] = {}
        self._buckets: dict[int, set[str]] = {}
        self._heap: list[int] = []
        # A bucket id sits in the heap at most once; emptied buckets stay as stale heap
        # entries until their time comes, which bounds the heap by distinct buckets.
        self._in_heap: set[int] = set()
        # The watermark's own bucket, once a pop reached it, is a heap of (due, id) instead
        # of a set: the watermark moves through it a few timers at a time, and scanning the
        # whole bucket each time cost O(bucket) per timer. Entries whose customer was
        # rescheduled since are stale and skipped when they come up.
        self._current: list[tuple[float, str]] = []
        self._current_bucket: int | None = None

    @classmethod
    def rebuild(
        cls, wake_times: Iterable[tuple[str, float | None]], bucket_s: float = 60.0
    ) -> TimerIndex:
        """Return an index holding ``(customer_id, next_wake_s)`` pairs (None = no timer)."""
        index = cls(bucket_s)
        for customer_id, due_s in wake_times:
            if due_s is not None:
                index.schedule(customer_id, due_s)
        return index

    def __len__(self) -> int:
        return len(self._due)

    def due_time(self, customer_id: str) -> float | None:
        """Return when ``customer_id`` is due, or None if it has no timer."""
        return self._due.get(customer_id)

    def schedule(self, customer_id: str, due_s: float | None) -> None:
        """Set (or with None, clear) the one timer of ``customer_id``."""
        due = self._due
        old = due.get(customer_id)
        if old == due_s:
            return
        buckets = self._buckets
        bucket_s = self._bucket_s
        if old is not None:
            members = buckets.get(math.floor(old / bucket_s))
            if members is not None:
                members.discard(customer_id)
            del due[customer_id]
        if due_s is None:
            return
        due[customer_id] = due_s
        bucket = math.floor(due_s / bucket_s)
        if bucket == self._current_bucket:
            heapq.heappush(self._current, (due_s, customer_id))
            return
        members = buckets.get(bucket)
        if members is None:
            buckets[bucket] = {customer_id}
        else:
            members.add(customer_id)
        if bucket not in self._in_heap:
            self._in_heap.add(bucket)
            heapq.heappush(self._heap, bucket)

    def pop_due(self, watermark_s: float) -> list[tuple[float, str]]:
        """Return and remove the timers due at or before ``watermark_s``, in (due, id) order."""
        heap, current = self._heap, self._current
        limit = math.floor(watermark_s / self._bucket_s)
        if (not current or current[0][0] > watermark_s) and (not heap or heap[0] > limit):
            return []  # the common case (called after every event): nothing is due
        pending = self._due
        due: list[tuple[float, str]] = []
        while current and current[0][0] <= watermark_s:
            due_s, customer_id = heapq.heappop(current)
            if pending.get(customer_id) == due_s:
                del pending[customer_id]
                due.append((due_s, customer_id))
        while heap and heap[0] <= limit:
            bucket = heapq.heappop(heap)
            self._in_heap.discard(bucket)
            members = self._buckets.pop(bucket, None)
            if not members:
                continue
            if bucket < limit:  # wholly behind the watermark: all of it is due
                for customer_id in members:
                    due.append((pending.pop(customer_id), customer_id))
                continue
            # The watermark's own bucket: it becomes the current heap (the previous one is
            # behind the watermark, so the loop above emptied it of live entries).
            current = self._current = [
                (pending[customer_id], customer_id) for customer_id in members
            ]
            heapq.heapify(current)
            self._current_bucket = bucket
            while current and current[0][0] <= watermark_s:
                due_s, customer_id = heapq.heappop(current)
                del pending[customer_id]
                due.append((due_s, customer_id))
        due.sort()
        return due
