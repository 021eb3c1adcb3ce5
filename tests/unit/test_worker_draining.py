"""A closed flush window written a chunk at a time (streams/worker/draining.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from streams.worker.draining import Closed, PartitionStates, WindowDrain


class Log:
    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self.done: list[list[int]] = []

        self.calls: list[str] = []

    async def send_scores(self, scores: Sequence[Any]) -> None:
        await asyncio.sleep(0)
        self.calls.append("score")
        self.items.extend(("score", score) for score in scores)

    async def write_states(self, part: PartitionStates, customer_ids: Sequence[str]) -> None:
        await asyncio.sleep(0)
        self.calls.append("state")
        self.items.extend(("state", (part.partition, cid)) for cid in customer_ids)

    def ack(self, records: Sequence[Any]) -> None:
        self.calls.append("ack")
        self.items.extend(("ack", record) for record in records)

    def drain(self, chunk: int = 4) -> WindowDrain:  # no settle: nothing sent in background
        return WindowDrain(self.send_scores, self.write_states, self.ack, self.done.append, chunk)


def closed(generation: int = 0) -> Closed:
    states = [
        PartitionStates(0, "ctx0", [f"a{i}" for i in range(10)]),
        PartitionStates(3, "ctx3", ["b0"]),
    ]
    return Closed(["e1", "e2", "e3"], ["s1", "s2"], states, generation)  # type: ignore[list-item]


def test_everything_is_written_in_order_scores_states_then_acks() -> None:
    log = Log()
    drain = log.drain()
    drain.start(closed())
    steps = 0
    while drain.pending:
        asyncio.run(drain.advance(2, generation=0))
        steps += 1
    kinds = [kind for kind, _ in log.items]
    assert kinds == ["score"] * 2 + ["state"] * 11 + ["ack"] * 3
    assert [item for kind, item in log.items if kind == "ack"] == ["e1", "e2", "e3"]
    assert log.done == [[0, 3]]
    assert steps > 3, "a small budget spreads the writing over several calls"
    # chunks of at most the budget (2): both scores in one call, 10 + 1 states in six, and
    # acks eight to a budget unit: all three in one
    assert log.calls == ["score"] + ["state"] * 6 + ["ack"]


def test_the_writing_is_paced_to_end_when_the_spread_is_over() -> None:
    log = Log()
    drain = log.drain(chunk=64)
    drain.start(closed(), now_s=100.0)  # 2 scores + 11 states + 1 unit of acks = 14 units
    assert drain.due(100.0, spread_s=0.5) == 0
    assert drain.due(100.25, spread_s=0.5) == 7, "half the time: half the units"
    asyncio.run(drain.advance(drain.due(100.25, spread_s=0.5), generation=0))
    assert drain.pending
    assert drain.due(100.25, spread_s=0.5) == 0, "on pace: nothing more is due yet"
    assert drain.due(101.0, spread_s=0.5) == 7, "past the spread: all the rest"
    asyncio.run(drain.advance(drain.due(101.0, spread_s=0.5), generation=0))
    assert not drain.pending
    assert [kind for kind, _ in log.items] == ["score"] * 2 + ["state"] * 11 + ["ack"] * 3


def test_the_acks_come_only_after_every_state_is_written() -> None:
    log = Log()
    drain = log.drain(chunk=1)
    drain.start(closed())
    while drain.pending:
        asyncio.run(drain.advance(1, generation=0))
        kinds = [kind for kind, _ in log.items]
        if "ack" in kinds:
            assert kinds.count("state") == 11


def test_a_window_of_an_older_generation_is_dropped_unacknowledged() -> None:
    log = Log()
    drain = log.drain()
    drain.start(closed(generation=1))
    asyncio.run(drain.advance(1, generation=1))
    assert asyncio.run(drain.advance(100, generation=2))  # a rebalance happened
    assert not drain.pending
    assert all(kind != "ack" for kind, _ in log.items)
    assert log.done == []


def test_finish_writes_what_is_left_and_a_second_window_waits_for_it() -> None:
    log = Log()
    drain = log.drain()
    drain.start(closed())
    asyncio.run(drain.advance(1, generation=0))
    try:
        drain.start(closed())
    except RuntimeError:
        pass
    else:
        raise AssertionError("a second window must not start before the first is written")
    asyncio.run(drain.finish(generation=0))
    assert not drain.pending
    assert [kind for kind, _ in log.items].count("ack") == 3


def test_records_are_acknowledged_only_once_the_states_are_durable() -> None:
    log = Log()
    durable = [False]

    async def wait_states() -> None:
        durable[0] = True

    drain = WindowDrain(
        log.send_scores,
        log.write_states,
        log.ack,
        log.done.append,
        64,
        lambda: durable[0],
        wait_states,
    )
    drain.start(closed())
    assert not asyncio.run(drain.advance(1_000, generation=0))
    assert [kind for kind, _ in log.items] == ["score"] * 2 + ["state"] * 11, "no acks yet"
    assert drain.pending
    asyncio.run(drain.finish(generation=0))  # waits for the states, then acknowledges
    assert [kind for kind, _ in log.items][-3:] == ["ack"] * 3
    assert not drain.pending
