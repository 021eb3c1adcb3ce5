"""Committing acknowledged offsets: Faust's bookkeeping, with three of its holes closed.

Faust commits a partition up to the end of the first run of consecutive offsets that are
acknowledged or in a *gap* (offsets known to hold no record), starting at its record of the
committed offset. faust-streaming 0.15 (``faust/transport/consumer.py``) gets three things
wrong that matter to a worker that must keep going on its own:

- :func:`new_offset`: an offset both acknowledged and in a gap is counted twice, and a
  duplicate ends the run. A gap over many acknowledged offsets then moves the committed
  offset by one per commit (once a second): after a broker restart in tests/faults R4 the
  group stayed ~3,700 offsets behind for minutes. (Such gaps came from a fetch made before
  the rebalance's seek: ``streams/worker/dispatch.py`` no longer adds them.)
- :func:`commit_offsets`: Faust records offsets as committed even when the broker refused
  them because the group rebalanced meanwhile; ending after the rebalance's seek, that
  record would hide the re-delivered records below it. Recorded only when the broker took
  them.
- :class:`StalledCommits`: a partition whose acknowledged offsets cannot be committed (an
  offset that is never acknowledged) is held back silently; it is logged.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from faust.types import TP

log = logging.getLogger(__name__)


def new_offset(consumer: Any, tp: TP) -> int | None:
    """Return the offset ``tp`` can be committed to now, taking the offsets it covers.

    Faust's ``Consumer._new_offset`` with one difference: an offset that is both
    acknowledged and in a gap counts once. Faust merges the gap's offsets into the list of
    acknowledged ones and takes its first run of consecutive numbers, which a duplicate
    ends: every duplicate cost one more commit, so a gap over many acknowledged offsets (a
    fetch from before a seek, after a rebalance) made the committed offset crawl forward by
    one per commit interval (R4: ~3,700 offsets behind after a broker restart, advancing by
    one a second). The rest is Faust's: gaps up to the highest acknowledged offset count as
    acknowledged, and nothing is committed while the lowest is more than one past the
    committed offset.
    """
    acked: list[int] = consumer._acked[tp]
    if not acked:
        return None
    offsets = set(acked)
    max_offset = max(offsets)
    gaps = consumer._gap[tp]
    if gaps:
        covered = gaps.overlap(0, max_offset)
        if covered:
            for interval in covered:
                offsets.update(range(interval.begin, interval.end))
            gaps.chop(0, max(max(interval.end for interval in covered) - 1, max_offset + 1))
    unique = sorted(offsets)
    committed = consumer._committed_offset[tp]
    if committed and unique[0] - committed > 1:
        acked[:] = unique
        return None
    run = 1
    while run < len(unique) and unique[run] == unique[run - 1] + 1:
        run += 1
    batch = unique[:run]
    acked[:] = unique[run:]
    consumer._acked_index[tp].difference_update(batch)
    return batch[-1] + 1


async def commit_offsets(consumer: Any, offsets: Mapping[TP, int]) -> bool:
    """Commit ``offsets`` of ``consumer``'s assigned partitions; return whether it did.

    Outputs first (``producer.flush()``), then the broker; only after the broker took them
    do the tables persist their offsets and the consumer record them as committed.
    """
    assignment = consumer.assignment()
    committable = {tp: offset for tp, offset in offsets.items() if tp in assignment}
    if len(committable) < len(offsets):
        consumer.log.info(
            "Discarded commit for revoked partitions that will be processed again: %r",
            {tp: offset for tp, offset in offsets.items() if tp not in committable},
        )
    if not committable:
        return False
    app = consumer.app
    await app.producer.flush()
    if not await consumer._commit(committable):
        return False
    app.tables.on_commit(committable)
    consumer._committed_offset.update(committable)
    app.monitor.on_tp_commit(committable)
    return True


class StalledCommits:
    """Warns when a partition's acknowledged offsets stay uncommittable (a gap at their head).

    Faust commits a partition's acknowledged offsets only from its committed offset on
    without a gap; an offset that is never acknowledged holds every later one back, silently.
    :meth:`observe` gets each commit attempt's outcome per partition and logs a WARNING, at
    most every ``warn_every_s``, once one has been held back for ``after_s``.
    """

    def __init__(
        self, after_s: float = 30.0, warn_every_s: float = 30.0, now: Any = time.monotonic
    ) -> None:
        self.after_s = after_s
        self.warn_every_s = warn_every_s
        self.now = now
        self.since: dict[TP, float] = {}
        self.warned: dict[TP, float] = {}
        self.warnings = 0

    def observe(
        self, tp: TP, new_offset: int | None, acked: Sequence[int], committed: int | None
    ) -> None:
        """Note that a commit attempt found ``new_offset`` for ``tp`` (None: nothing)."""
        if new_offset is not None or not acked:
            self.since.pop(tp, None)
            return
        now = self.now()
        since = self.since.setdefault(tp, now)
        if now - since < self.after_s or now - self.warned.get(tp, -math.inf) < self.warn_every_s:
            return
        self.warned[tp] = now
        self.warnings += 1
        log.warning(
            "offsets of %s/%d are acknowledged from %d on (%d of them) but not committed for "
            "%.0fs: Faust's committed offset is %s and the offsets between are not acknowledged",
            tp.topic,
            tp.partition,
            min(acked),
            len(acked),
            now - since,
            committed,
        )
