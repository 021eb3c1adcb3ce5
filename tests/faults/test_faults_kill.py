"""R1, R2, R6: kill -9 the worker while the known stream flows; nothing lost, nothing extra.

At-least-once underneath: after a kill the worker re-reads from the last committed offset,
so some records are written twice (raw duplicates, reported). What must hold:

- de-duplicated by their deterministic ids, the outputs equal those of a run that was never
  disturbed (scores: no unknown id and the same latest score per customer, since the worker
  may coalesce a customer's scores within a flush window on the compacted topic);
- no id ever carries two different contents (conflicting duplicates = 0);
- the customers table ends in exactly the state a clean replay computes (every input event
  applied once).

What downstream consumers must do with these at-least-once topics is in tests/faults/README.md
("Consuming at-least-once outputs").
"""

from __future__ import annotations

import random
from collections.abc import Callable

from streams.settings import Settings
from tests.faults.conftest import Baseline, KnownStream
from tests.faults.harness import (
    EndOffsets,
    KillLog,
    StreamFeeder,
    group_of,
    iter_chunks,
    kill_and_restart,
    produce_all,
    report,
    wait_caught_up,
    wait_progress,
)
from tests.faults.verdict import OUTPUT_IDS, check_run, expected_outputs
from tests.support.processes import WorkerProcess, consumer_caught_up

KILLS = 5
CRASHES = 2  # R6: kills right after outputs appear (bench/faults_long.py does 20)
FEED_RATE_PER_S = 110.0  # ~49 s of flow: longer than five kill-and-restart rounds


def test_an_undisturbed_worker_matches_per_partition_replay(
    known: KnownStream, baseline: Baseline
) -> None:
    """R2 (clean): the reference every fault test compares with is itself right."""
    check = check_run(
        baseline.settings,
        known.events,
        expected_outputs(known.reference, baseline.outputs),
        known.replayed,
    )
    report("R2-baseline", {"events": len(known.events), **check.summary()})
    assert check.outputs.total_raw_duplicates == 0
    assert check.ok, check.explain()
    assert baseline.outputs.counts()["interventions"] > 0
    assert baseline.outputs.counts()["risk-changes"] > 0


def test_kill_9_the_worker_repeatedly_while_the_stream_flows(
    fault_settings: Callable[..., Settings],
    workers: Callable[..., WorkerProcess],
    known: KnownStream,
    baseline: Baseline,
) -> None:
    """R1 + R2: five kill -9s mid-stream; outputs and final state as if nothing happened."""
    settings = fault_settings()
    worker = workers(settings)
    worker.start().wait_ready()
    feeder = StreamFeeder(settings, known.events, FEED_RATE_PER_S).start()
    probe = EndOffsets(settings, OUTPUT_IDS)
    log = KillLog()
    try:
        kill_and_restart(worker, probe, KILLS, random.Random(7), log, feeder)
        feeder.join()
        wait_caught_up(settings, worker=worker)
    finally:
        probe.close()
    worker.stop()
    check = check_run(
        settings,
        known.events,
        expected_outputs(known.reference, baseline.outputs),
        known.replayed,
    )
    report(
        "R1",
        {
            "events": len(known.events),
            "kills": log.kills,
            "outputs_at_kill": log.outputs_at_kill,
            "kills_while_stream_flowed": log.kills_mid_stream,
            "restart_to_ready_s": [round(s, 1) for s in log.restart_to_ready_s],
            **check.summary(),
        },
    )
    assert log.kills == KILLS
    assert log.kills_mid_stream >= 3, "the stream ended before most kills"
    assert check.ok, check.explain()


def test_a_crash_between_sending_outputs_and_committing_offsets_leaves_only_duplicates(
    fault_settings: Callable[..., Settings],
    workers: Callable[..., WorkerProcess],
    known: KnownStream,
    baseline: Baseline,
) -> None:
    """R6: kill -9 as soon as a chunk's outputs are visible, before its offsets are committed.

    The kill lands in that window when, right after it, the group's committed offsets are
    still behind the input: outputs of records that will be processed again are out.
    After the restart, consumers that de-duplicate by id see every output exactly once.
    """
    settings = fault_settings()
    half = len(known.events) // 2
    chunks = list(iter_chunks(known.events[half:], CRASHES + 1))
    worker = workers(settings)
    worker.start().wait_ready()
    produce_all(settings, known.events[:half])
    wait_caught_up(settings, worker=worker)
    probe = EndOffsets(settings, OUTPUT_IDS)
    in_window = 0
    try:
        for chunk in chunks[:-1]:
            seen = probe.total()
            produce_all(settings, chunk)
            wait_progress(probe, seen, 60, worker, "outputs of the new chunk")
            worker.kill()
            if not consumer_caught_up(settings, group_of(settings)):
                in_window += 1
            worker.start().wait_ready()
            wait_caught_up(settings, worker=worker)
        produce_all(settings, chunks[-1])
        wait_caught_up(settings, worker=worker)
    finally:
        probe.close()
    worker.stop()
    check = check_run(
        settings,
        known.events,
        expected_outputs(known.reference, baseline.outputs),
        known.replayed,
    )
    report(
        "R6",
        {
            "events": len(known.events),
            "kills": CRASHES,
            "kills_in_window": in_window,
            **check.summary(),
        },
    )
    assert in_window >= 1, "no kill landed between the outputs and the offset commit"
    assert check.ok, check.explain()
