"""R4: the broker is killed (SIGKILL) and restarted mid-stream; the worker carries on alone.

A broker of its own (the session broker serves every other test): the stream flows, the
broker dies hard, comes back on the same port from the same data dir, and the worker must
catch up without anyone touching it: the same process, same invariants as R1.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.io import kafka_local
from tests.faults.conftest import Baseline, KnownStream, make_settings
from tests.faults.harness import EndOffsets, StreamFeeder, report, wait_caught_up, wait_progress
from tests.faults.verdict import OUTPUT_IDS, check_run, expected_outputs
from tests.support.processes import WorkerProcess, wait_for

FEED_RATE_PER_S = 200.0


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Path]:
    """Start a broker only this test uses; return its data dir; always stop it."""
    data_dir = tmp_path / "kafka"
    try:
        kafka_local.broker_up(data_dir)
        yield data_dir
    finally:
        kafka_local.broker_down(data_dir)


def test_the_worker_recovers_by_itself_when_the_broker_dies_mid_stream(
    own_broker: Path,
    workers: Callable[..., WorkerProcess],
    known: KnownStream,
    baseline: Baseline,
) -> None:
    info = kafka_local.read_state(own_broker)
    assert info is not None
    settings = make_settings(info.bootstrap)
    worker = workers(settings)
    worker.start().wait_ready()
    feeder = StreamFeeder(settings, known.events, FEED_RATE_PER_S).start()
    probe = EndOffsets(settings, OUTPUT_IDS)
    try:
        wait_progress(probe, 500, 90, worker, "outputs before the broker dies")
    finally:
        probe.close()
    os.kill(info.pid, signal.SIGKILL)
    wait_for(lambda: not kafka_local.broker_status(own_broker)[0], 30, "the broker to be gone")
    down_at = time.monotonic()
    restarted = kafka_local.broker_up(own_broker)
    down_s = time.monotonic() - down_at
    assert restarted.port == info.port, "the broker must come back where clients knew it"
    feeder.join(timeout_s=180)
    wait_caught_up(settings, timeout_s=180, worker=worker)
    recovered_s = time.monotonic() - down_at
    assert worker.process is not None
    assert worker.process.poll() is None, f"the worker died:\n{worker.log_tail()}"
    worker.stop()
    check = check_run(
        settings,
        known.events,
        expected_outputs(known.reference, baseline.outputs),
        known.replayed,
    )
    report(
        "R4",
        {
            "events": len(known.events),
            "broker_down_to_answering_s": round(down_s, 1),
            "broker_down_to_worker_caught_up_s": round(recovered_s, 1),
            **check.summary(),
        },
    )
    assert check.ok, check.explain()
