"""Delivering a fetched batch (streams/worker/dispatch.py): order, lists, tracking, rebalances.

The consumer here is a stand-in with the few attributes ``deliver`` uses; the real consumer
loop runs in every real-broker test (the worker, the bare bench agent).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.worker.dispatch import BATCH_MAX, batch_handlers, commit_in_background, deliver


@dataclass
class Message:
    topic: str
    offset: int
    generation_id: int = 1


class ProducerBuffer:
    async def wait_until_ebb(self) -> None:
        await asyncio.sleep(0)


@dataclass
class App:
    consumer_generation_id: int = 1
    producer: Any = field(default_factory=lambda: type("P", (), {"buffer": ProducerBuffer()}))


class Consumer:
    def __init__(self) -> None:
        self.app = App()
        self.flow_active = True
        self.suspend_flow = asyncio.Event()
        self.log: list[tuple[str, Any]] = []
        self.tracked: list[int] = []
        self.waits = 0

    async def callback(self, message: Message) -> None:
        self.log.append(("one", message.offset))

    def track_message(self, message: Message) -> None:
        self.tracked.append(message.offset)

    async def wait_first(self, *awaitables: Any) -> None:
        self.waits += 1
        work, suspend_wait = awaitables
        suspend = asyncio.ensure_future(suspend_wait)
        task = asyncio.ensure_future(work)
        await asyncio.wait([task, suspend], return_when=asyncio.FIRST_COMPLETED)
        suspend.cancel()
        task.cancel()


def with_handler(consumer: Consumer, topics: Sequence[str]) -> list[list[int]]:
    lists: list[list[int]] = []

    async def handler(messages: Sequence[Message]) -> None:
        lists.append([message.offset for message in messages])
        consumer.log.append(("list", [message.offset for message in messages]))

    for topic in topics:
        batch_handlers(consumer.app)[topic] = handler
    return lists


def test_records_keep_their_order_across_handled_and_ordinary_topics() -> None:
    consumer = Consumer()
    with_handler(consumer, ["clicks", "orders"])
    topics = ["clicks", "orders", "other", "other", "clicks", "clicks", "other"]
    messages = [Message(topic, offset) for offset, topic in enumerate(topics)]
    asyncio.run(deliver(consumer, messages))
    assert consumer.log == [
        ("list", [0, 1]),  # one handler for both topics: one list
        ("one", 2),
        ("one", 3),
        ("list", [4, 5]),
        ("one", 6),
    ]
    assert consumer.tracked == [0, 1, 4, 5], "handled records are tracked before the handler"
    assert consumer.waits == 2, "one wait_first per run of ordinary records, not per record"


def test_lists_are_at_most_batch_max_long() -> None:
    consumer = Consumer()
    lists = with_handler(consumer, ["clicks"])
    count = BATCH_MAX * 2 + 3
    asyncio.run(deliver(consumer, [Message("clicks", offset) for offset in range(count)]))
    assert [len(one) for one in lists] == [BATCH_MAX, BATCH_MAX, 3]
    assert [offset for one in lists for offset in one] == list(range(count))


def test_nothing_more_is_handed_over_once_a_rebalance_stopped_the_flow() -> None:
    consumer = Consumer()
    lists = with_handler(consumer, ["clicks"])
    consumer.flow_active = False
    asyncio.run(deliver(consumer, [Message("clicks", 0), Message("clicks", 1)]))
    assert lists == []
    assert consumer.tracked == [], "an untracked record is not waited for by the rebalance"
    consumer.flow_active = True
    consumer.app.consumer_generation_id = 2  # fetched before the generation moved on
    asyncio.run(deliver(consumer, [Message("clicks", 2, generation_id=1)]))
    assert lists == []


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
