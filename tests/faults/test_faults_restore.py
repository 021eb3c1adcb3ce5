"""R5: a worker's local RocksDB is deleted; its tables come back from the changelogs, equal.

Uses the undisturbed baseline run's worker: its RocksDB files are read (worker stopped),
deleted, and read again after a new worker on the same data dir restored them.
"""

from __future__ import annotations

import shutil
import time

from tests.faults.conftest import FAST_REJOIN, Baseline, KnownStream
from tests.faults.harness import PINNED, metric_sum, read_rocksdb, report
from tests.support.processes import WorkerProcess


def test_a_deleted_rocksdb_is_restored_from_the_changelog_unchanged(
    known: KnownStream, baseline: Baseline
) -> None:
    before = read_rocksdb(baseline.data_dir)
    customers = sum(len(rows) for name, rows in before.items() if name.startswith("customers-"))
    assert customers == len(known.replayed)
    for store in list((baseline.data_dir / "worker").rglob("*.db")):
        shutil.rmtree(store)
    assert read_rocksdb(baseline.data_dir) == {}
    worker = WorkerProcess(baseline.settings, baseline.data_dir, **PINNED, **FAST_REJOIN)
    began = time.monotonic()
    try:
        worker.start().wait_ready()
        start_to_ready_s = time.monotonic() - began
        _, exposition = worker.get("/metrics")
    finally:
        worker.stop()
    after = read_rocksdb(baseline.data_dir)
    report(
        "R5",
        {
            "customers": customers,
            "tables": {name: len(rows) for name, rows in sorted(before.items())},
            "start_to_ready_s": round(start_to_ready_s, 2),
            "recovery_s_metric": round(
                metric_sum(exposition, "churnstream_recovery_seconds_sum"), 3
            ),
        },
    )
    assert after == before
