"""The worker's garbage-collection schedule (streams/worker/gc_policy.py)."""

from __future__ import annotations

import doctest
import gc
from collections.abc import Iterator

import pytest

from streams.worker import gc_policy
from streams.worker.gc_policy import GC_THRESHOLDS, OldGenerations, calm_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_doctests() -> None:
    assert doctest.testmod(gc_policy).failed == 0


@pytest.mark.usefixtures("restore_gc")
def test_after_calm_gc_only_young_collections_run_by_themselves() -> None:
    calm_gc()
    assert gc.get_freeze_count() > 0, "what existed at start is frozen"
    assert gc.get_threshold() == GC_THRESHOLDS
    generations: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            generations.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        keep = [[index] for index in range(GC_THRESHOLDS[0] * 30)]  # 30 young collections
    finally:
        gc.callbacks.remove(seen)
    assert len(keep) == GC_THRESHOLDS[0] * 30
    assert generations, "young collections still run"
    assert set(generations) == {0}, "the old generations wait for OldGenerations"


def test_old_generations_are_collected_when_quiet_or_at_the_latest_when_due() -> None:
    clock = [0.0]
    collected: list[float] = []

    def collect() -> int:
        collected.append(clock[0])
        return 3

    full = OldGenerations(every_s=600.0, quiet_after_s=60.0, now=lambda: clock[0], collect=collect)
    for second in range(0, 1300, 10):  # busy all along
        clock[0] = float(second)
        full.tick(quiet=False)
    assert collected == [600.0, 1200.0]
    clock[0] = 1230.0
    assert not full.tick(quiet=True), "quiet, but a full collection ran 30 s ago"
    clock[0] = 1261.0
    assert full.tick(quiet=True)
    assert full.collections == 3
    assert full.freed == 9
