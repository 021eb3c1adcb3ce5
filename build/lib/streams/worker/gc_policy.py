"""When CPython's cyclic garbage collector may stop the worker, and for how long.

A collection stops everything for about 1 µs per object it scans on the bench's 2-core
machine, and a streaming worker keeps many objects alive for a while: cached customer states
(each a handful of lists and dicts), the records of an open flush window, decoded events
waiting in the event-time merge. With CPython's default schedule the older generations are
collected every few seconds, 40-160 ms each under load: every record arriving meanwhile
waits, which is most of the latency tail at half load. Yet almost nothing the worker
creates is cyclic garbage (refcounting frees it): collections of the older generations
found nothing to free at all in steady state (measured with ``gc.callbacks``).

So the worker runs a different schedule (:func:`calm_gc`, :class:`OldGenerations`):

- what exists once the worker is built (modules, classes, the app) is frozen: never
  scanned again (``gc.freeze``; refcounting still frees it);
- the young generation is collected automatically, often enough that each collection is
  short (it scans only objects created since the previous one that are still alive);
- the older generations are never collected automatically; :class:`OldGenerations`
  collects them when the worker has been quiet for a moment, and at the latest every
  :data:`FULL_EVERY_S` under steady load: one pause every few minutes instead of every few
  seconds, and any garbage cycles that reached the old generations are freed then.

:class:`GcPauses` logs every long pause, so the schedule can be checked in production.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Young collections after this many net new tracked objects: each scans at most about this
# many (2-3 ms here), and objects that survive one move to the old generations.
YOUNG_THRESHOLD = 2_000
# The old generations' automatic thresholds, set out of reach (collections are scheduled).
NEVER = 1_000_000_000
GC_THRESHOLDS = (YOUNG_THRESHOLD, NEVER, NEVER)
# A full collection runs at the latest this long after the previous one, and at the
# earliest this long after it once the worker has been quiet.
FULL_EVERY_S = 600.0
FULL_WHEN_QUIET_AFTER_S = 60.0


class GcPauses:
    """Times the garbage collector's pauses (``gc.callbacks``); logs the long ones."""

    def __init__(self, warn_s: float = 0.05) -> None:
        self.warn_s = warn_s
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds) of the long ones
        self.total_s = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        """The ``gc.callbacks`` hook."""
        if phase == "start":
            self._started = time.perf_counter()
            return
        elapsed = time.perf_counter() - self._started
        generation = info.get("generation", 2)
        self.total_s[generation] += elapsed
        self.count[generation] += 1
        if elapsed >= self.warn_s:
            self.pauses.append((generation, elapsed))
            log.warning(
                "garbage collection of generation %d paused the worker %.0f ms",
                generation,
                elapsed * 1000,
            )

    def install(self) -> GcPauses:
        """Register with ``gc.callbacks``; return self."""
        gc.callbacks.append(self)
        return self


def calm_gc() -> None:
    """Freeze every object alive now and switch to the worker's collection schedule.

    Call it once the worker is built, before it starts. The old generations are then only
    collected by :class:`OldGenerations` (or an explicit ``gc.collect()``).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class OldGenerations:
    """Schedules full collections: when quiet, or at the latest every ``every_s``.

    Call :meth:`tick` from a timer with whether records have stopped arriving.

    >>> clock = [0.0]
    >>> full = OldGenerations(every_s=600.0, quiet_after_s=60.0, now=lambda: clock[0])
    >>> clock[0] = 30.0; full.tick(quiet=True)   # quiet, but too soon after the last one
    False
    >>> clock[0] = 90.0; full.tick(quiet=False)  # busy, not due yet
    False
    >>> clock[0] = 90.0; full.tick(quiet=True)
    True
    >>> clock[0] = 700.0; full.tick(quiet=False)  # busy for ten minutes: due anyway
    True
    """

    def __init__(
        self,
        every_s: float = FULL_EVERY_S,
        quiet_after_s: float = FULL_WHEN_QUIET_AFTER_S,
        now: Callable[[], float] = time.monotonic,
        collect: Callable[[], int] = gc.collect,
    ) -> None:
        self.every_s = every_s
        self.quiet_after_s = quiet_after_s
        self.now = now
        self.collect = collect
        self.last_s = now()
        self.collections = 0
        self.freed = 0

    def tick(self, quiet: bool) -> bool:
        """Run a full collection if one is due; return whether it ran."""
        since = self.now() - self.last_s
        if since < self.quiet_after_s or (not quiet and since < self.every_s):
            return False
        self.freed += self.collect()
        self.collections += 1
        self.last_s = self.now()
        return True
