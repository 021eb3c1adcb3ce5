"""The bench's steps after (d): a restart that restores 1M customers' state, and a scale-out.

Functions of the :class:`scenarios.Run` they measure for; see bench/README.md.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from inputs import encode_records, partition_of, produce_records
from restore import restored_customer_ids, write_changelog
from worker_runs import (
    BenchWorker,
    committed_total,
    compare_states,
    read_customers,
    settle,
    wait_scored,
    watch_throughput,
)

from streams.core.events import Event, ProfileEvent
from streams.io.kafka_clients import create_topics

if TYPE_CHECKING:
    from scenarios import Run

STARTUP_TIMEOUT_S = 120.0


def restore(run: Run) -> None:
    """Restore N customers' state into a fresh worker; time its first event after that."""
    assert run.input is not None
    customers = run.plan.restore_customers
    if "worker_start_to_ready_s_empty" not in run.extra:  # (d) did not run: time a start
        create_topics(run.settings("em-"), run.plan.partitions)
        empty = BenchWorker.start(
            run.children, "empty", run.bootstrap, "em-", run.work_dir / "empty"
        )
        try:
            ready_s = empty.wait_ready(STARTUP_TIMEOUT_S)
            run.extra["worker_start_to_ready_s_empty"] = round(ready_s, 2)
        finally:
            empty.stop()
    settings = run.settings("rs-")
    create_topics(settings, run.plan.partitions)
    write_s, value_bytes = write_changelog(
        settings, customers, run.plan.partitions, run.input.end_time
    )
    run.log(f"restore: wrote {customers:,} states ({value_bytes:.0f} B each) in {write_s:.1f}s")
    worker = BenchWorker.start(
        run.children, "restore", run.bootstrap, "rs-", run.work_dir / "restore"
    )
    try:
        ready_s = worker.wait_ready(max(30.0, min(120.0, run.remaining_s() - 80.0)))
        answers = [
            worker.get(f"/v1/customers/{cid}/score")[0] for cid in restored_customer_ids(customers)
        ]
        if any(status != 200 for status in answers):
            msg = f"the restored worker does not know restored customers: {answers}"
            raise RuntimeError(msg)
        record_restore(run, customers, ready_s, value_bytes)
        # The first event on a partition after a restart rebuilds that partition's timer
        # index from the table: time it on one partition.
        primer = encode_records(primer_events(1, run.input.end_time))
        started = time.monotonic()
        produce_records(settings, primer, run.plan.partitions)
        wait_scored(worker, 1, max(20.0, min(60.0, run.remaining_s() - 80.0)))
        first_s = time.monotonic() - started
        run.extra["restore"]["first_event_after_ready_s"] = round(first_s, 2)
        run.log(f"restore: the first event after ready was scored after {first_s:.1f}s")
    finally:
        worker.stop()


def record_restore(run: Run, customers: int, ready_s: float, value_bytes: float) -> None:
    """Record the restore time, extrapolated linearly to a million customers."""
    empty_s = float(run.extra.get("worker_start_to_ready_s_empty", 0.0))
    per_million = empty_s + max(0.0, ready_s - empty_s) * 1e6 / customers
    run.extra["restore_s_per_million_customers"] = round(per_million, 1)
    run.extra["restore"] = {
        "customers": customers,
        "start_to_ready_s": round(ready_s, 2),
        "start_to_ready_s_empty_state": empty_s,
        "state_value_bytes": round(value_bytes, 1),
        "extrapolated_to_1m": customers != 1_000_000,
    }
    if customers != 1_000_000:
        run.extra["note_restore"] = (
            f"restore measured for {customers:,} customers ({ready_s:.1f}s start to ready, "
            f"{empty_s:.1f}s of it a start with empty state) and extrapolated linearly to 1M"
        )
    run.log(f"restore: ready after {ready_s:.1f}s; {per_million:.1f}s per 1M customers")


def scale_out(run: Run) -> None:
    """Two workers, four partitions, the same records: throughput and correctness.

    Both workers join and settle their assignment before the records are produced, so
    the window measures two workers, not one alone and then a rebalance.
    """
    assert run.input is not None
    assert run.broker is not None
    records = [*run.input.records, *run.half_records]
    settings = run.settings("so-")
    create_topics(settings, run.plan.partitions)
    workers = [
        BenchWorker.start(run.children, f"scale-{n}", run.bootstrap, "so-", run.work_dir / f"so{n}")
        for n in (1, 2)
    ]
    for worker in workers:
        worker.wait_ready(STARTUP_TIMEOUT_S)
    produce_records(settings, records, run.plan.partitions)
    # Left for after the cap: stopping both workers (15 s at worst, in parallel), reading
    # two changelogs and stopping the broker.
    cap_s = max(20.0, run.remaining_s() - 45.0)
    run.log(f"scale-out: 2 workers ready; {len(records):,} records, cap {cap_s:.0f}s")
    tick = run.progress_logger("scale-out", len(records))
    result = watch_throughput("scale_out", workers, len(records), cap_s, run.broker.pid, tick)
    run.measured["scale_out"] = result
    per_worker = [worker.events_scored() for worker in workers]
    if result.complete:
        for worker in workers:
            settle(worker)
    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        run.extra["scale_out_stop_s"] = list(pool.map(BenchWorker.stop, workers))
    committed = committed_total(settings, "so-churnstream")
    check: dict[str, Any] = {
        "records": len(records),
        "events_per_worker": per_worker,
        "both_workers_scored": all(count > 0 for count in per_worker),
        "every_record_scored_once": sum(per_worker) == len(records) if result.complete else None,
        # Informational: a graceful stop should leave every scored record committed.
        "committed_after_stop": committed,
    }
    if result.complete and run.full_states is not None:
        compared = compare_states(run.full_states, read_customers(settings))
        check["states_vs_single_worker"] = compared
        same: bool | None = (
            compared["order_free_equal"] == compared["customers"]
            and compared["missing"] == 0
            and compared["unexpected"] == 0
        )
    else:
        same = None
        check["states_vs_single_worker"] = "not compared: (d) or scale-out did not finish"
    basic = bool(check["both_workers_scored"] and check["every_record_scored_once"])
    check["correct"] = bool(basic and same) if same is not None else None
    run.extra["scale_out"] = check
    run.extra["scale_out_correct"] = check["correct"]
    run.log(f"scale-out: {result.events_per_s:,.0f} events/s; checks {check}")


def primer_events(partitions: int, after: datetime) -> list[Event]:
    """Return one profile event of a new customer for each of ``partitions``."""
    events: list[Event] = []
    covered: set[int] = set()
    number = 0
    while len(covered) < partitions:
        customer_id = f"primer-{number}"
        partition = partition_of(customer_id.encode(), partitions)
        if partition not in covered:
            covered.add(partition)
            at = after + timedelta(seconds=1)
            events.append(ProfileEvent(customer_id=customer_id, event_time=at, chat_opt_in=True))
        number += 1
    return events
