"""The event-time merge of a partition's input topics (streams/core/merge.py)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from streams.core.merge import PartitionMerge


def never_pending(source: int) -> bool:
    return False


def test_records_of_three_topics_go_in_event_time_order_once_each_topic_has_one() -> None:
    merge: PartitionMerge[str] = PartitionMerge()
    merge.add(0, 30.0, "click@30")
    merge.add(0, 50.0, "click@50")
    # orders and profiles may still deliver something earlier: nothing goes yet
    assert merge.release(lambda source: True, now_s=0.0, max_wait_s=1.0).items == []
    merge.add(1, 40.0, "order@40")
    merge.add(2, 10.0, "profile@10")
    released = merge.release(lambda source: True, now_s=0.1, max_wait_s=1.0)
    # profiles is empty again and may deliver something before click@30: only profile@10 goes
    assert released.items == ["profile@10"]

    def profiles_done(source: int) -> bool:
        return source != 2

    # orders is empty after order@40 and may deliver something before click@50
    released = merge.release(profiles_done, now_s=0.2, max_wait_s=1.0)
    assert released.items == ["click@30", "order@40"]
    assert merge.held == 1
    assert merge.release(never_pending, now_s=0.3, max_wait_s=1.0).items == ["click@50"]
    assert merge.held == 0


def test_a_topic_with_nothing_in_flight_is_not_waited_for() -> None:
    merge: PartitionMerge[str] = PartitionMerge()
    merge.add(0, 30.0, "click@30")
    assert merge.release(never_pending, now_s=0.0, max_wait_s=1.0).items == ["click@30"]


def test_a_lagging_topic_is_waited_for_at_most_max_wait_then_given_up() -> None:
    merge: PartitionMerge[str] = PartitionMerge()
    merge.add(0, 30.0, "click@30")
    merge.add(0, 31.0, "click@31")

    def orders_pending(source: int) -> bool:
        return source == 1

    assert merge.release(orders_pending, now_s=10.0, max_wait_s=0.5).items == []
    assert merge.release(orders_pending, now_s=10.4, max_wait_s=0.5).items == []
    released = merge.release(orders_pending, now_s=10.5, max_wait_s=0.5)
    assert released.items == ["click@30", "click@31"]
    assert released.gave_up == [1]


def test_equal_times_go_in_source_order_and_a_topic_keeps_its_own_order() -> None:
    merge: PartitionMerge[str] = PartitionMerge()
    merge.add(2, 5.0, "profile@5")
    merge.add(1, 5.0, "order@5")
    merge.add(0, 5.0, "click@5")
    merge.add(0, 4.0, "late-click@4")  # after click@5 in its topic: stays behind it
    released = merge.release(never_pending, now_s=0.0, max_wait_s=1.0)
    assert released.items == ["click@5", "late-click@4", "order@5", "profile@5"]


def test_clear_drops_what_was_held() -> None:
    merge: PartitionMerge[str] = PartitionMerge()
    merge.add(0, 1.0, "a")
    merge.release(lambda source: True, now_s=0.0, max_wait_s=1.0)
    merge.clear()
    assert merge.held == 0
    assert merge.blocked_since_s is None
    assert merge.release(never_pending, now_s=0.0, max_wait_s=1.0).items == []


@given(
    st.lists(st.lists(st.integers(0, 1000), max_size=30), min_size=3, max_size=3),
    st.randoms(use_true_random=False),
)
def test_fed_in_any_interleaving_the_merge_gives_the_sorted_merge_of_sorted_topics(
    topics: list[list[int]], rng: random.Random
) -> None:
    # Each topic is in time order (as a producer writes a customer's events); the merge of
    # any interleaving of their deliveries is the stable sort by (time, source).
    topics = [sorted(times) for times in topics]
    expected = sorted(
        (
            (time, source, index)
            for source, times in enumerate(topics)
            for index, time in enumerate(times)
        ),
    )
    cursors = [0, 0, 0]
    merge: PartitionMerge[tuple[int, int, int]] = PartitionMerge()
    out: list[tuple[int, int, int]] = []

    def pending(source: int) -> bool:
        return cursors[source] < len(topics[source])

    while any(pending(source) for source in range(3)):
        source = rng.choice([s for s in range(3) if pending(s)])
        index = cursors[source]
        cursors[source] += 1
        merge.add(source, float(topics[source][index]), (topics[source][index], source, index))
        out.extend(merge.release(pending, now_s=0.0, max_wait_s=1.0).items)
    out.extend(merge.release(pending, now_s=0.0, max_wait_s=1.0).items)
    assert out == expected
