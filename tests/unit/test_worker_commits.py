"""Committing acknowledged offsets (streams/worker/commits.py): a failed commit is not recorded.

The consumer is a stand-in with the attributes Faust's commit path uses; the real one commits
in every real-broker test (R4 restarts the broker under a running worker).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from intervaltree import IntervalTree

from streams.worker import tuning
from streams.worker.commits import StalledCommits, commit_offsets, new_offset
from streams.worker.dispatch import ack_offsets

TP0 = TP("in-clickstream", 0)
TP1 = TP("in-clickstream", 1)


class Calls:
    def __init__(self) -> None:
        self.flushed = 0
        self.tables: list[dict[Any, int]] = []
        self.monitor: list[dict[Any, int]] = []


class Consumer:
    """What ``commit_offsets`` and ``ack_offsets`` touch of Faust's consumer."""

    def __init__(self, broker: Callable[[Consumer, Mapping[Any, int]], Awaitable[bool]]) -> None:
        self.calls = calls = Calls()
        self.broker = broker
        self.log = logging.getLogger("test-consumer")
        self._committed_offset: dict[Any, int | None] = defaultdict(lambda: None)
        self._acked: dict[Any, list[int]] = defaultdict(list)
        self._acked_index: dict[Any, set[int]] = defaultdict(set)
        self._n_acked = 0
        self._waiting_for_ack: asyncio.Future[None] | None = None
        self.assigned = {TP0}

        class Producer:
            async def flush(self) -> None:
                calls.flushed += 1

        class Tables:
            def on_commit(self, offsets: Mapping[Any, int]) -> None:
                calls.tables.append(dict(offsets))

        class Monitor:
            def on_tp_commit(self, offsets: Mapping[Any, int]) -> None:
                calls.monitor.append(dict(offsets))

        self.app = type("App", (), {"producer": Producer(), "tables": Tables()})()
        self.app.monitor = Monitor()

    def assignment(self) -> set[Any]:
        return self.assigned

    async def _commit(self, offsets: Mapping[Any, int]) -> bool:
        return await self.broker(self, offsets)


async def _takes(consumer: Consumer, offsets: Mapping[Any, int]) -> bool:
    return True


def test_a_commit_the_broker_took_is_recorded_after_the_outputs_were_flushed() -> None:
    consumer = Consumer(_takes)
    assert asyncio.run(commit_offsets(consumer, {TP0: 120})) is True
    assert consumer._committed_offset[TP0] == 120
    assert consumer.calls.flushed == 1
    assert consumer.calls.tables == [{TP0: 120}]
    assert consumer.calls.monitor == [{TP0: 120}]


def test_offsets_of_partitions_no_longer_assigned_are_not_committed() -> None:
    committed: list[dict[Any, int]] = []

    async def broker(consumer: Consumer, offsets: Mapping[Any, int]) -> bool:
        committed.append(dict(offsets))
        return True

    consumer = Consumer(broker)
    assert asyncio.run(commit_offsets(consumer, {TP0: 5, TP1: 9})) is True
    assert committed == [{TP0: 5}]
    assert TP1 not in consumer._committed_offset
    consumer.assigned = set()
    assert asyncio.run(commit_offsets(consumer, {TP0: 7})) is False
    assert consumer._committed_offset[TP0] == 5


def test_a_commit_failing_after_the_rebalance_leaves_redelivered_records_acknowledgeable() -> None:
    # The broker is back; a commit of offset 300 sent before the rebalance fails ("already
    # rebalanced") only after the rebalance sought the partition back to the broker's
    # committed offset 200 and Faust recorded that.
    async def rebalanced_meanwhile(consumer: Consumer, offsets: Mapping[Any, int]) -> bool:
        consumer._committed_offset[TP0] = 200  # the rebalance's seek (Consumer.perform_seek)
        return False

    consumer = Consumer(rebalanced_meanwhile)
    assert asyncio.run(commit_offsets(consumer, {TP0: 300})) is False
    assert consumer._committed_offset[TP0] == 200
    assert consumer.calls.tables == []
    assert consumer.calls.monitor == []
    # Records 200..299 come again: each one is acknowledged, so a commit can cover them
    # (with 300 recorded, every one of them would be ignored and the group stay at 200).
    assert ack_offsets(consumer, TP0, range(200, 300)) == 100


def test_the_worker_consumer_commits_through_it() -> None:
    assert tuning._Consumer._commit_offsets is not faust_aiokafka.Consumer._commit_offsets


def test_a_partition_held_back_by_a_gap_is_reported_after_a_while(caplog: Any) -> None:
    clock = [0.0]
    stalled = StalledCommits(after_s=30.0, warn_every_s=30.0, now=lambda: clock[0])
    stalled.observe(TP0, None, [205, 206], 200)  # 200..204 never acknowledged
    clock[0] = 29.0
    stalled.observe(TP0, None, [205, 206, 207], 200)
    assert stalled.warnings == 0
    clock[0] = 31.0
    with caplog.at_level(logging.WARNING, logger="streams.worker.commits"):
        stalled.observe(TP0, None, [205, 206, 207], 200)
    assert stalled.warnings == 1
    assert "in-clickstream/0 are acknowledged from 205 on (3 of them)" in caplog.text
    assert "committed offset is 200" in caplog.text
    clock[0] = 40.0
    stalled.observe(TP0, None, [205], 200)
    assert stalled.warnings == 1  # at most every 30 s
    stalled.observe(TP0, 210, [205], 200)  # committable again: the clock starts over
    clock[0] = 65.0
    stalled.observe(TP0, None, [215], 210)
    stalled.observe(TP1, None, [], None)  # nothing acknowledged: nothing held back
    assert stalled.warnings == 1


def test_offsets_both_acknowledged_and_in_a_gap_are_committed_at_once() -> None:
    consumer = Consumer(_takes)
    consumer._gap = defaultdict(IntervalTree)
    consumer._committed_offset[TP0] = 414
    # 414..600 handled and acknowledged; a gap (a fetch from before a seek) also covers
    # 415..600: Faust's _new_offset returned 416, 417, ... one per commit.
    ack_offsets(consumer, TP0, range(414, 601))
    consumer._gap[TP0].addi(415, 601)
    assert new_offset(consumer, TP0) == 601
    assert consumer._acked[TP0] == []
    assert not consumer._acked_index[TP0]
    assert not consumer._gap[TP0]


def test_a_gap_counts_as_acknowledged_and_a_missing_offset_holds_the_rest_back() -> None:
    consumer = Consumer(_takes)
    consumer._gap = defaultdict(IntervalTree)
    consumer._committed_offset[TP0] = 100
    ack_offsets(consumer, TP0, [100, 101, 105, 106, 109])
    consumer._gap[TP0].addi(102, 105)  # 102..104 are no records
    assert new_offset(consumer, TP0) == 107  # 107 and 108 are neither
    assert consumer._acked[TP0] == [109]
    consumer._committed_offset[TP0] = 107
    assert new_offset(consumer, TP0) is None  # 109 is more than one past 107: wait
    ack_offsets(consumer, TP0, [107, 108])
    assert new_offset(consumer, TP0) == 110
    assert new_offset(consumer, TP1) is None
