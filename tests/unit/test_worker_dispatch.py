"""Delivering a fetched batch (streams/worker/dispatch.py): order, lists, tracking, rebalances.

The consumer here is a stand-in with the few attributes ``deliver`` uses; the real consumer
loop runs in every real-broker test (the worker, the bare bench agent).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP

from streams.worker.dispatch import (
    BATCH_MAX,
    ack_offsets,
    batch_handlers,
    commit_in_background,
    deliver,
    fetch,
    hold,
    release,
)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int


class ProducerBuffer:
    async def wait_until_ebb(self) -> None:
        await asyncio.sleep(0)


class Sensor:
    def __init__(self) -> None:
        self.heard: list[tuple[TP, int, int]] = []

    def on_records_in(self, tp: TP, count: int, last_offset: int) -> None:
        self.heard.append((tp, count, last_offset))


@dataclass
class App:
    consumer_generation_id: int = 1
    producer: Any = field(default_factory=lambda: type("P", (), {"buffer": ProducerBuffer()}))
    sensors: list[Any] = field(default_factory=lambda: [Sensor(), object()])


class Consumer:
    def __init__(self) -> None:
        self.app = App()
        self.flow_active = True
        self.suspend_flow = asyncio.Event()
        self.log: list[tuple[str, Any]] = []
        self.waits = 0
        self.calls: list[int] = []  # lists per handler call

    def _to_message(self, tp: TP, record: Record) -> tuple[str, int]:
        return (tp.topic, record.offset)

    async def callback(self, message: tuple[str, int]) -> None:
        self.log.append(("one", message))

    async def wait_first(self, *awaitables: Any) -> None:
        self.waits += 1
        work, suspend_wait = awaitables
        suspend = asyncio.ensure_future(suspend_wait)
        task = asyncio.ensure_future(work)
        await asyncio.wait([task, suspend], return_when=asyncio.FIRST_COMPLETED)
        suspend.cancel()
        task.cancel()


def with_handler(consumer: Consumer, topics: Sequence[str]) -> list[tuple[TP, list[int]]]:
    lists: list[tuple[TP, list[int]]] = []

    async def handler(call: Sequence[tuple[TP, Sequence[Record]]]) -> None:
        assert sum(len(records) for _, records in call) <= BATCH_MAX
        consumer.calls.append(len(call))
        for tp, records in call:
            lists.append((tp, [record.offset for record in records]))
            consumer.log.append(("list", (tp.topic, [record.offset for record in records])))

    for topic in topics:
        batch_handlers(consumer.app)[topic] = handler
    return lists


def fetched(topic: str, partition: int, offsets: Sequence[int]) -> tuple[TP, list[Any]]:
    return TP(topic, partition), [Record(topic, partition, offset) for offset in offsets]


def test_handled_partitions_go_as_lists_and_ordinary_ones_as_messages() -> None:
    consumer = Consumer()
    with_handler(consumer, ["clicks", "orders"])
    batch = [fetched("clicks", 0, [5, 6]), fetched("other", 0, [1, 2]), fetched("orders", 1, [9])]
    asyncio.run(deliver(consumer, batch, generation=1))
    assert consumer.log == [
        ("one", ("other", 1)),  # Faust's agents first, then the handler's lists
        ("one", ("other", 2)),
        ("list", ("clicks", [5, 6])),
        ("list", ("orders", [9])),
    ]
    assert consumer.waits == 1, "one wait_first per partition's ordinary records, not per record"
    sensor = consumer.app.sensors[0]
    assert sensor.heard == [(TP("clicks", 0), 2, 6), (TP("orders", 1), 1, 9)], "metrics and lag"


def test_a_call_holds_at_most_batch_max_records() -> None:
    consumer = Consumer()
    lists = with_handler(consumer, ["clicks"])
    count = BATCH_MAX * 2 + 3
    asyncio.run(deliver(consumer, [fetched("clicks", 2, range(count))], generation=1))
    assert [len(offsets) for _, offsets in lists] == [BATCH_MAX, BATCH_MAX, 3]
    assert [offset for _, offsets in lists for offset in offsets] == list(range(count))
    assert {tp for tp, _ in lists} == {TP("clicks", 2)}


def test_nothing_more_is_handed_over_once_a_rebalance_stopped_the_flow() -> None:
    consumer = Consumer()
    lists = with_handler(consumer, ["clicks"])
    consumer.flow_active = False
    asyncio.run(deliver(consumer, [fetched("clicks", 0, [0, 1])], generation=1))
    assert lists == []
    consumer.flow_active = True
    consumer.app.consumer_generation_id = 2  # fetched before the generation moved on
    asyncio.run(deliver(consumer, [fetched("clicks", 0, [2])], generation=1))
    assert lists == []


class Acking:
    """The consumer state Faust's ``ack`` and commit use."""

    def __init__(self, committed: int | None = None) -> None:
        self._committed_offset: dict[TP, int | None] = defaultdict(lambda: committed)
        self._acked_index: dict[TP, set[int]] = defaultdict(set)
        self._acked: dict[TP, list[int]] = defaultdict(list)
        self._n_acked = 0
        self._waiting_for_ack: asyncio.Future[None] | None = None
        self._unacked_messages: weakref.WeakSet[Any] = weakref.WeakSet()


def test_offsets_are_acknowledged_as_faust_acknowledges_messages() -> None:
    consumer = Acking(committed=10)
    tp = TP("clicks", 0)
    assert ack_offsets(consumer, tp, [9, 10, 11, 12, 11]) == 3, "below committed or twice: skipped"
    assert consumer._acked[tp] == [10, 11, 12]
    assert consumer._acked_index[tp] == {10, 11, 12}
    assert consumer._n_acked == 3


def test_a_held_token_keeps_faust_waiting_until_released() -> None:
    consumer = Acking()

    async def scenario() -> None:
        consumer._waiting_for_ack = asyncio.get_running_loop().create_future()
        token = hold(consumer)
        assert set(consumer._unacked_messages) == {token}
        assert not token.acked
        release(consumer, token)
        assert token.acked
        assert set(consumer._unacked_messages) == set()
        assert consumer._waiting_for_ack.done(), "wait_empty is woken at once"

    asyncio.run(scenario())


class Committing:
    """A consumer whose commits wait for the test; counts them and their crashes."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()
        self.crashed: list[BaseException] = []
        self.fail: Exception | None = None

        class Log:
            def exception(self, *args: Any, **kwargs: Any) -> None:
                pass

        self.log = Log()

    async def commit(self) -> bool:
        self.started += 1
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return True

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)


def test_a_commit_runs_beside_the_delivery_and_never_twice_at_once() -> None:
    consumer = Committing()

    async def scenario() -> None:
        first = commit_in_background(consumer)
        assert first is not None, "the caller does not wait for the commit"
        await asyncio.sleep(0)
        assert consumer.started == 1
        assert commit_in_background(consumer) is None, "one commit at a time"
        consumer.release.set()
        await first
        second = commit_in_background(consumer)
        assert second is not None
        await second

    asyncio.run(scenario())
    assert consumer.started == 2
    assert consumer.crashed == []


def test_a_commit_that_raises_crashes_the_consumer() -> None:
    consumer = Committing()
    consumer.fail = RuntimeError("broker refused the commit")

    async def scenario() -> None:
        task = commit_in_background(consumer)
        assert task is not None
        consumer.release.set()
        await asyncio.wait([task])
        await asyncio.sleep(0)  # the crash is scheduled by the done callback

    asyncio.run(scenario())
    assert [str(exc) for exc in consumer.crashed] == ["broker refused the commit"]


class Fetching:
    """The consumer state ``fetch`` reads: one fetch's records, read offsets, gaps."""

    def __init__(self, records: dict[TP, list[Record]], active: set[TP] | None = None) -> None:
        self.records = records
        self.active = active
        self.should_stop = False
        self.flow_active = True
        self._buffered_partitions: set[TP] = set()
        self._read_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self.gaps: list[tuple[TP, int, int]] = []
        self.end_offsets: dict[TP, int] = {}
        monitor = type("M", (), {"track_tp_end_offset": self.end_offsets.__setitem__})()
        topics = type("T", (), {"acks_enabled_for": lambda _, topic: True})()
        self.app = type("A", (), {"consumer_generation_id": 7, "monitor": monitor})()
        self.app.topics = topics

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        return self.records, self.active

    def highwater(self, tp: TP) -> int:
        return 100

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        self.gaps.append((tp, offset_from, offset_to))


def test_fetch_keeps_faust_read_offsets_gaps_and_active_partitions() -> None:
    clicks0, clicks1, orders0 = TP("clicks", 0), TP("clicks", 1), TP("orders", 0)
    consumer = Fetching(
        {
            clicks0: [Record("clicks", 0, offset) for offset in (5, 6, 7)],
            clicks1: [Record("clicks", 1, offset) for offset in (3, 4, 8, 9)],  # a gap
            orders0: [Record("orders", 0, 1)],  # not active: left for later
        },
        active={clicks0, clicks1},
    )
    consumer._read_offset[clicks0] = 4
    consumer._read_offset[clicks1] = 4  # 3 was read before: a duplicate
    fetched, generation = asyncio.run(fetch(consumer, timeout=1.0))
    assert generation == 7
    assert [(tp, [record.offset for record in records]) for tp, records in fetched] == [
        (clicks0, [5, 6, 7]),
        (clicks1, [4, 8, 9]),
    ]
    assert consumer.gaps == [(clicks1, 5, 7)]  # 5, 6 and 7 are no records
    assert consumer._read_offset[clicks0] == 7
    assert consumer._read_offset[clicks1] == 9
    assert set(consumer.end_offsets) == {clicks0, clicks1}


def test_a_fetch_from_before_a_seek_adds_no_gap_over_records_handled_since_the_rebalance() -> None:
    # After a rebalance Faust resumes fetching before it seeks back to the committed offset
    # (414): the handler gets 414..600 from the old position, the seek sets the read offset
    # to 414, then a fetch made before the seek brings 601..610. Offsets 415..600 are being
    # handled (and will be acknowledged): a gap over them made Faust's commits crawl.
    clicks = TP("clicks", 1)
    consumer = Fetching({clicks: [Record("clicks", 1, offset) for offset in range(414, 601)]})
    consumer.app.sensors = []
    consumer.app.producer = type("P", (), {"buffer": ProducerBuffer()})()
    handled: list[int] = []

    async def handler(call: Sequence[tuple[TP, Sequence[Record]]]) -> None:
        handled.extend(record.offset for _, records in call for record in records)

    batch_handlers(consumer.app)["clicks"] = handler

    async def scenario() -> None:
        fetched, generation = await fetch(consumer, timeout=1.0)
        await deliver(consumer, fetched, generation)
        consumer._read_offset[clicks] = 414  # the seek
        consumer.records = {clicks: [Record("clicks", 1, offset) for offset in range(601, 611)]}
        fetched, generation = await fetch(consumer, timeout=1.0)
        await deliver(consumer, fetched, generation)

    asyncio.run(scenario())
    assert handled == list(range(414, 611))
    assert consumer.gaps == []
    # a jump past what was handled is still a gap
    consumer._read_offset[clicks] = 414
    consumer.records = {clicks: [Record("clicks", 1, 620)]}
    asyncio.run(fetch(consumer, timeout=1.0))
    assert consumer.gaps == [(clicks, 611, 619)]
    # and after the next rebalance what was handled before counts for nothing
    consumer.app.consumer_generation_id = 8
    consumer._read_offset[clicks] = 414
    consumer.records = {clicks: [Record("clicks", 1, 500)]}
    asyncio.run(fetch(consumer, timeout=1.0))
    assert consumer.gaps[-1] == (clicks, 415, 499)


def test_fetch_returns_nothing_while_the_flow_is_stopped() -> None:
    consumer = Fetching({TP("clicks", 0): [Record("clicks", 0, 1)]})
    consumer.flow_active = False
    seeks: list[bool] = []

    async def perform_seek() -> None:
        seeks.append(True)

    consumer.perform_seek = perform_seek  # type: ignore[attr-defined]
    consumer.log = type("L", (), {"dev": lambda *a: None, "warning": lambda *a: None})()  # type: ignore[attr-defined]
    fetched, _ = asyncio.run(fetch(consumer, timeout=1.0))
    assert fetched == []
    assert seeks == [True], "seeks back to the committed offsets, as Faust's getmany does"


def test_partitions_take_turns_and_a_small_fetch_is_one_call() -> None:
    consumer = Consumer()
    lists = with_handler(consumer, ["clicks", "orders"])
    share = BATCH_MAX // 2
    clicks, orders = range(share * 3 + 1), range(1000, 1000 + share + 5)
    asyncio.run(deliver(consumer, [fetched("clicks", 0, clicks), fetched("orders", 0, orders)], 1))
    assert [(tp.topic, len(offsets)) for tp, offsets in lists][:4] == [
        ("clicks", share),
        ("orders", share),  # the first call: both topics, a share each
        ("clicks", share),
        ("orders", 5),
    ]
    assert [offset for tp, offsets in lists if tp.topic == "orders" for offset in offsets] == list(
        orders
    )
    assert [offset for tp, offsets in lists if tp.topic == "clicks" for offset in offsets] == list(
        clicks
    )
    consumer.calls.clear()
    asyncio.run(deliver(consumer, [fetched("clicks", 1, [1, 2]), fetched("orders", 2, [7])], 1))
    assert consumer.calls == [2], "live: a whole small fetch in one call"
