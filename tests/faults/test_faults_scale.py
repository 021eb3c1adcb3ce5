"""R3: scale 1 -> 2 -> 1 workers while the known stream flows (two rebalances).

Same invariants as R1 (see test_faults_kill.py), and no partition starves: in each phase,
every input partition that has unprocessed records gets its committed offset moved on.
"""

from __future__ import annotations

from collections.abc import Callable

from streams.settings import Settings
from tests.faults.conftest import Baseline, KnownStream
from tests.faults.harness import (
    EndOffsets,
    StreamFeeder,
    metric_sum,
    report,
    wait_caught_up,
    wait_every_partition_advances,
    wait_progress,
)
from tests.faults.verdict import OUTPUT_IDS, check_run, expected_outputs
from tests.support.processes import WorkerProcess, wait_for

FEED_RATE_PER_S = 250.0  # ~21 s of flow: both rebalances happen mid-stream


def _consumed(worker: WorkerProcess) -> float:
    status, exposition = worker.get("/metrics")
    return metric_sum(exposition, "churnstream_events_consumed_total") if status == 200 else 0.0


def test_scaling_one_two_one_workers_mid_stream_loses_and_starves_nothing(
    fault_settings: Callable[..., Settings],
    workers: Callable[..., WorkerProcess],
    known: KnownStream,
    baseline: Baseline,
) -> None:
    settings = fault_settings()
    first = workers(settings, "first")
    second = workers(settings, "second")
    first.start().wait_ready()
    feeder = StreamFeeder(settings, known.events, FEED_RATE_PER_S).start()
    probe = EndOffsets(settings, OUTPUT_IDS)
    try:
        wait_progress(probe, 50, 60, first, "outputs of the first worker")
        second.start().wait_ready()
        with_two = wait_every_partition_advances(settings, 60, "progress with two workers")
        wait_for(lambda: _consumed(second) > 0, 60, "the second worker to take a share")
        second_share = _consumed(second)
        flowing_when_scaled_in = not feeder.done
        second.stop()
        with_one = wait_every_partition_advances(settings, 60, "progress with one worker again")
        feeder.join()
        wait_caught_up(settings)
    finally:
        probe.close()
    first.stop()
    check = check_run(
        settings,
        known.events,
        expected_outputs(known.reference, baseline.outputs),
        known.replayed,
    )
    report(
        "R3",
        {
            "events": len(known.events),
            "partitions_with_backlog_two_workers": with_two,
            "partitions_with_backlog_one_worker": with_one,
            "events_consumed_by_second_worker": second_share,
            "stream_flowing_when_scaled_in": flowing_when_scaled_in,
            **check.summary(),
        },
    )
    assert with_two
    assert check.ok, check.explain()
