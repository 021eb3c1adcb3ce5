"""Watermark and timer index: event time drives timers, a tick touches only the due."""

from __future__ import annotations

import math

from streams.core.clock import TimerIndex, Watermark


def test_watermark_is_max_event_time_and_never_moves_back() -> None:
    mark = Watermark()
    assert mark.current_s == -math.inf
    assert mark.observe(100.0) == 100.0
    assert mark.observe(50.0) == 100.0  # a late event does not rewind time
    assert mark.max_event_s == 100.0


def test_live_watermark_follows_wall_clock_minus_grace() -> None:
    mark = Watermark(grace_s=30.0)
    mark.observe(100.0)
    assert mark.tick_wall(120.0) == 100.0  # wall - grace is behind event time
    assert mark.tick_wall(200.0) == 170.0
    assert mark.observe(150.0) == 170.0


def test_pop_due_returns_only_due_customers_in_time_then_id_order() -> None:
    timers = TimerIndex(bucket_s=10.0)
    timers.schedule("late", 500.0)
    timers.schedule("b", 25.0)
    timers.schedule("a", 25.0)
    timers.schedule("same-bucket-not-due", 29.0)
    assert timers.pop_due(26.0) == [(25.0, "a"), (25.0, "b")]
    assert timers.pop_due(26.0) == []
    assert timers.pop_due(29.0) == [(29.0, "same-bucket-not-due")]
    assert len(timers) == 1


def test_reschedule_replaces_and_none_clears() -> None:
    timers = TimerIndex(bucket_s=10.0)
    timers.schedule("c", 15.0)
    timers.schedule("c", 95.0)
    assert timers.pop_due(50.0) == []
    timers.schedule("c", None)
    assert timers.pop_due(1_000.0) == []
    assert len(timers) == 0


def test_tick_cost_scales_with_due_not_with_all_customers() -> None:
    timers = TimerIndex(bucket_s=60.0)
    for i in range(50_000):
        timers.schedule(f"far-{i}", 1e9 + i)
    timers.schedule("soon", 10.0)
    # Only the heap head is inspected: the far buckets are never touched.
    assert timers.pop_due(20.0) == [(10.0, "soon")]
    assert len(timers._heap) <= 50_000


def test_rebuild_from_states_wake_times() -> None:
    rebuilt = TimerIndex.rebuild([("a", 30.0), ("b", None), ("c", 10.0)])
    assert rebuilt.pop_due(100.0) == [(10.0, "c"), (30.0, "a")]
