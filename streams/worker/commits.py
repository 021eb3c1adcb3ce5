"""Committing acknowledged offsets without recording a failed commit as done.

faust-streaming 0.15's ``Consumer._commit_offsets`` (``faust/transport/consumer.py``) sets
its record of committed offsets (``_committed_offset``) to the offsets it tried to commit
whether or not the broker took them. A commit fails without crashing the consumer only when
the group has rebalanced meanwhile (aiokafka's ``CommitFailedError``: "already rebalanced").
When that failed commit ends *after* the rebalance, Faust has already sought the partitions
back to the broker's committed offsets and set its record to them; the failed commit then
overwrites the record with its own, higher offsets. The records in between are delivered
again, but an acknowledgement below the recorded offset is ignored (as Faust ignores one),
so none of them is ever acknowledged, and if no later record comes (the end of a stream, a
quiet shop) the group's committed offset stays behind for good: the worker looks caught up
to itself and lagging to everyone else. Seen after a broker restart (tests/faults R4).

:func:`commit_offsets` is Faust's at-least-once path with that one difference: the record
moves only when the broker took the commit. After a commit that failed because of a
rebalance, the rebalance's seek sets the record and the records come again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.types import TP


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
