"""Produce batches per partition (worker/batch_writes.py), against aiokafka's batch API.

No broker: a stand-in producer plays aiokafka's ``create_batch``/``send_batch`` (the
real-broker path is covered by the worker pipeline, fault and scale-out tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from streams.worker.batch_writes import Pair, PartitionBatches, flush_hooks


class FakeBuilder:
    def __init__(self, room: int) -> None:
        self.records: list[Pair] = []
        self.room = room
        self.closed = False

    def append(self, *, key: bytes, value: bytes, timestamp: None) -> object | None:
        if self.closed or len(self.records) >= self.room:
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """aiokafka's batch API as PartitionBatches uses it: a partition's next batch is taken
    only when the previous one has left (here: when the test opens the gate)."""

    def __init__(self, room: int = 3) -> None:
        self.room = room
        self.sent: list[list[Pair]] = []
        self.gate = asyncio.Event()
        self.next_offset = 0
        self.fail: Exception | None = None

    async def let_through(self, until: Callable[[], bool]) -> None:
        """Open the gate for one batch at a time until ``until()``."""
        while not until():
            self.gate.set()
            await asyncio.sleep(0)

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder(self.room)

    async def send_batch(self, batch: FakeBuilder, topic: str, *, partition: int) -> Any:
        # aiokafka lingers on a batch that is still open (producer_linger): a closed one
        # leaves with the next produce request.
        assert batch.closed, "a batch is closed before it is handed over"
        await self.gate.wait()
        self.gate.clear()
        if self.fail is not None:
            raise self.fail
        self.sent.append(batch.records)
        delivered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        delivered.set_result(type("Meta", (), {"offset": self.next_offset}))
        self.next_offset += len(batch.records)
        return delivered


def fake_app(producer: FakeProducer) -> Any:
    app = type("App", (), {"in_transaction": False})()
    app.producer = type("P", (), {"_ensure_producer": lambda self: producer})()
    return app


def record(n: int) -> Pair:
    return (f"k{n}".encode(), f"v{n}".encode())


def test_records_sent_while_a_batch_waits_join_the_next_batch_in_order() -> None:
    producer = FakeProducer(room=3)
    app = fake_app(producer)
    batches = PartitionBatches(app)
    offsets: list[int] = []

    async def scenario() -> None:
        await batches.send("t", 0, [record(0), record(1)], offsets.append)
        await asyncio.sleep(0)  # the lane's task takes the first batch and waits
        await batches.send("t", 0, [record(2)], offsets.append)
        await batches.send("t", 0, [record(3), record(4), record(5)], offsets.append)
        settled = asyncio.ensure_future(batches.settled())
        await producer.let_through(settled.done)
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert producer.sent == [
        [record(0), record(1)],
        [record(2), record(3), record(4)],  # joined while the first one waited
        [record(5)],
    ]
    assert offsets == [1, 4, 4, 5], "each call hears of every batch holding its records"


def test_handed_over_waits_for_what_was_queued_before_not_for_later_records() -> None:
    producer = FakeProducer(room=2)
    app = fake_app(producer)
    batches = PartitionBatches(app)
    assert flush_hooks(app) == [batches.handed_over], "the producer's flush awaits it"

    async def scenario() -> list[list[Pair]]:
        await batches.send("t", 0, [record(0), record(1), record(2)])  # two batches
        await batches.send("t", 1, [record(3)])
        waiting = asyncio.ensure_future(batches.handed_over())
        sent_when_done: list[list[Pair]] = []
        for n in range(4, 40):  # a steady stream of later records: never all handed over
            producer.gate.set()
            await asyncio.sleep(0)
            if waiting.done() and not sent_when_done:
                sent_when_done = list(producer.sent)
            await batches.send("t", 0, [record(n)])
        assert waiting.done(), "it must return under a steady stream of sends"
        await waiting
        return sent_when_done

    sent = asyncio.run(scenario())
    flat = [pair for batch in sent for pair in batch]
    assert {record(0), record(1), record(2), record(3)} <= set(flat)


def test_handed_over_raises_what_the_hand_over_raised() -> None:
    producer = FakeProducer(room=2)
    producer.fail = RuntimeError("producer closed")
    batches = PartitionBatches(fake_app(producer))

    async def scenario() -> None:
        await batches.send("t", 0, [record(0)])
        waiting = asyncio.ensure_future(batches.handed_over())
        producer.gate.set()
        await waiting

    with pytest.raises(RuntimeError, match="producer closed"):
        asyncio.run(scenario())


def test_marks_tell_when_everything_sent_before_them_is_acknowledged() -> None:
    producer = FakeProducer(room=2)
    batches = PartitionBatches(fake_app(producer))
    heard: list[str] = []
    batches.on_delivery.append(lambda: heard.append("delivered"))

    async def scenario() -> None:
        batches.enqueue("t", 0, [record(0), record(1), record(2)])  # two batches
        mark = batches.mark()
        assert mark == {("t", 0): 2}
        assert not batches.delivered(mark)
        batches.enqueue("t", 0, [record(3)])  # joins the second batch, still waiting
        await producer.let_through(lambda: batches.delivered_count("t", 0) >= 1)
        assert not batches.delivered(mark), "one of the two batches is acknowledged"
        await producer.let_through(lambda: batches.delivered(mark))
        assert batches.created("t", 0) == 2

    asyncio.run(scenario())
    assert heard[:2] == ["delivered", "delivered"]


def test_urgent_topics_go_on_the_second_producer_and_marks_cover_both() -> None:
    main, urgent = FakeProducer(room=2), FakeProducer(room=2)
    app = fake_app(main)
    app.producer._urgent = urgent
    batches = PartitionBatches(app, urgent_topics=["risk-changes"])

    async def scenario() -> None:
        batches.enqueue("risk-changes", 0, [record(0)])
        batches.enqueue("changelog", 0, [record(1)])
        mark = batches.mark()
        await main.let_through(lambda: batches.delivered_count("changelog", 0) >= 1)
        assert not batches.delivered(mark), "the risk change is not acknowledged yet"
        await urgent.let_through(lambda: batches.delivered(mark))
        # stopped at shutdown: what is still queued goes on the app's own producer
        app.producer._urgent = None
        batches.enqueue("risk-changes", 0, [record(2)])
        await main.let_through(lambda: batches.delivered_count("risk-changes", 0) >= 2)

    asyncio.run(scenario())
    assert urgent.sent == [[record(0)]]
    assert main.sent == [[record(1)], [record(2)]]


class Accumulator:
    """aiokafka's accumulator as ``urgent_waiting`` reads it: batches per partition until the
    sender drains them into a request."""

    def __init__(self) -> None:
        self._batches: dict[tuple[str, int], list[Any]] = {}


class SenderProducer(FakeProducer):
    """A producer whose batches wait in an accumulator until its sender task runs: each
    sender step drains what is there into a request (``requests``), as aiokafka's does."""

    def __init__(self) -> None:
        super().__init__()
        self.gate.set()
        self._message_accumulator = Accumulator()
        self.requests: list[list[Any]] = []

    async def send_batch(self, batch: FakeBuilder, topic: str, *, partition: int) -> Any:
        delivered = await super().send_batch(batch, topic, partition=partition)
        self.gate.set()
        self._message_accumulator._batches.setdefault((topic, partition), []).append(batch)
        return delivered

    async def sender(self) -> None:
        while True:
            await asyncio.sleep(0)
            batches = self._message_accumulator._batches
            if batches:
                self.requests.append([b.records for queued in batches.values() for b in queued])
                batches.clear()


def test_push_urgent_returns_once_urgent_records_are_in_a_request() -> None:
    producer = SenderProducer()
    app = fake_app(producer)
    app.producer._urgent = producer
    batches = PartitionBatches(app, urgent_topics=["risk-changes"])

    async def scenario() -> None:
        sender = asyncio.ensure_future(producer.sender())
        batches.enqueue("risk-changes", 1, [record(0)])
        assert batches.urgent_waiting()
        # what a CPU-bound caller does next: without the turns, nothing has left by then
        await batches.push_urgent()
        assert producer.requests == [[[record(0)]]]
        assert not batches.urgent_waiting()
        sender.cancel()

    asyncio.run(scenario())


def test_push_urgent_gives_up_after_its_turns_and_ignores_other_topics() -> None:
    main, producer = FakeProducer(), SenderProducer()  # its sender never runs: no answer
    main.gate.set()
    app = fake_app(main)
    app.producer._urgent = producer
    batches = PartitionBatches(app, urgent_topics=["risk-changes"])
    turns = [0]

    async def count_turns() -> None:
        while True:
            await asyncio.sleep(0)
            turns[0] += 1

    async def scenario() -> None:
        counter = asyncio.ensure_future(count_turns())
        await asyncio.sleep(0)
        batches.enqueue("changelog", 0, [record(1)])
        before = turns[0]
        await batches.push_urgent(turns=5)
        assert turns[0] == before, "nothing urgent is queued: no turn is given"
        batches.enqueue("risk-changes", 0, [record(2)])
        await batches.push_urgent(turns=5)
        assert batches.urgent_waiting()
        assert turns[0] - before <= 6  # five turns, plus one for the request's write
        counter.cancel()

    asyncio.run(scenario())
