"""Event-time order across a partition's input topics (Kafka Streams' PartitionGroup).

A customer's clicks, orders and profile changes arrive on three topics that share the
customer's partition. A consumer reads them round-robin by fetch, not by event time: with a
backlog, one topic runs ahead of the others. :class:`PartitionMerge` holds each topic's
records of one partition in arrival (offset) order and releases them smallest event time
first, but only while every topic that may still hold earlier records has one buffered — or
is known to have nothing more (``pending`` says False), or has been waited on for
``max_wait_s``. Ties go to the lower source index, the order :func:`source_of` gives, which
replay uses too.

Nothing here knows Kafka: the caller says which sources may have records in flight.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from streams.core.events import ClickEvent, Event, OrderEvent

T = TypeVar("T")
# The input topics in source order: clickstream, orders, customer-profiles.
SOURCES = 3


def source_of(event: Event) -> int:
    """Return the source index of ``event``'s input topic (clickstream 0, orders 1, profiles 2)."""
    if isinstance(event, ClickEvent):
        return 0
    if isinstance(event, OrderEvent):
        return 1
    return 2


@dataclass(slots=True)
class Released(Generic[T]):
    """What one :meth:`PartitionMerge.release` call let go."""

    items: list[T] = field(default_factory=list)
    # Sources waited on for max_wait_s without a record arriving: the caller should stop
    # expecting records from them until one arrives.
    gave_up: list[int] = field(default_factory=list)


class PartitionMerge(Generic[T]):
    """Buffered records of one partition's sources, released in event-time order.

    >>> merge: PartitionMerge[str] = PartitionMerge()
    >>> merge.add(0, 20.0, "click@20")
    >>> merge.release(lambda source: source == 1, now_s=0.0, max_wait_s=1.0).items
    []
    >>> merge.add(1, 10.0, "order@10")
    >>> merge.release(lambda source: False, now_s=0.1, max_wait_s=1.0).items
    ['order@10', 'click@20']
    """

    __slots__ = ("_queues", "blocked_since_s", "held")

    def __init__(self, sources: int = SOURCES) -> None:
        self._queues: list[deque[tuple[float, T]]] = [deque() for _ in range(sources)]
        self.blocked_since_s: float | None = None
        self.held = 0

    def add(self, source: int, time_s: float, item: T) -> None:
        """Buffer ``item`` of ``source`` at event time ``time_s`` (after its earlier records)."""
        self._queues[source].append((time_s, item))
        self.held += 1

    def release(
        self, pending: Callable[[int], bool], now_s: float, max_wait_s: float
    ) -> Released[T]:
        """Return the items that may go now, in event-time order.

        ``pending(source)`` says whether ``source`` may still deliver records to this
        partition that were written before the ones buffered (it is asked only about sources
        with nothing buffered). A head blocked by pending sources waits until they deliver,
        or until it has waited ``max_wait_s`` since it was first blocked.
        """
        out: Released[T] = Released()
        queues = self._queues
        # ``pending`` cannot change during one call: ask it once per source at most
        asked: dict[int, bool] = {}
        while self.held:
            best = -1
            best_s = 0.0
            for source, queue in enumerate(queues):
                if queue and (best < 0 or queue[0][0] < best_s):
                    best, best_s = source, queue[0][0]
            blocked = []
            for source, queue in enumerate(queues):
                if queue or source == best or source in out.gave_up:
                    continue
                waits = asked.get(source)
                if waits is None:
                    waits = asked[source] = pending(source)
                if waits:
                    blocked.append(source)
            if blocked:
                if self.blocked_since_s is None:
                    self.blocked_since_s = now_s
                if now_s - self.blocked_since_s < max_wait_s:
                    return out
                out.gave_up.extend(blocked)
            self.blocked_since_s = None
            out.items.append(queues[best].popleft()[1])
            self.held -= 1
        self.blocked_since_s = None
        return out

    def clear(self) -> None:
        """Drop everything buffered (their records will be delivered again)."""
        for queue in self._queues:
            queue.clear()
        self.held = 0
        self.blocked_since_s = None
