"""Long variants of the fault tests (issue 7): many kills, many rebalances, several broker deaths.

Usage (from the repository root)::

    .venv/bin/python bench/faults_long.py                      # every scenario, 20 kills
    .venv/bin/python bench/faults_long.py --scenarios kill --kills 30
    .venv/bin/python bench/faults_long.py --guarantee exactly_once

Starts its own local broker in a temporary directory (always stopped at the end), runs the
known stream of tests/faults once undisturbed (the reference for interventions), then each
scenario on fresh topics, and checks the same invariants as ``make test``'s fault tests
(tests/faults/verdict.py): de-duplicated by id nothing lost, nothing extra, no conflicting
duplicates, and final states equal a clean replay. Scenarios:

- ``kill``: ``--kills`` kill -9s of the worker while the stream flows (R1);
- ``crash``: ``--kills`` kills each right after a chunk's outputs appear, before the
  offset commit (R6);
- ``scale``: ``--kills // 5`` cycles of 1 -> 2 -> 1 workers mid-stream (R3);
- ``broker``: ``--broker-kills`` SIGKILLs and restarts of the broker mid-stream (R4);
- ``restore``: the undisturbed worker's RocksDB deleted and restored (R5), timed.

``--guarantee exactly_once`` runs the workers with Faust's ``PROCESSING_GUARANTEE`` set to
``exactly_once`` (Kafka transactions) and reads outputs and changelog ``read_committed``, as
an exactly-once consumer would. Prints one JSON line per scenario; the last line is one JSON
object with all of them. Exit status 1 if any invariant broke.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from streams.core.events import Event  # noqa: E402 - after the path set-up above
from streams.io import kafka_local  # noqa: E402
from streams.settings import Settings  # noqa: E402
from tests.faults.conftest import FAST_REJOIN, PARTITIONS, make_settings  # noqa: E402
from tests.faults.harness import (  # noqa: E402
    PINNED,
    EndOffsets,
    KillLog,
    StreamFeeder,
    group_of,
    iter_chunks,
    kill_and_restart,
    metric_sum,
    produce_all,
    read_rocksdb,
    wait_caught_up,
    wait_every_partition_advances,
    wait_progress,
)
from tests.faults.stream import known_stream  # noqa: E402
from tests.faults.verdict import (  # noqa: E402
    OUTPUT_IDS,
    Outputs,
    check_run,
    expected_outputs,
    read_outputs,
    reference_outputs,
    replay_states,
)
from tests.support.processes import WorkerProcess, consumer_caught_up, wait_for  # noqa: E402

RESTART_S = 9.0  # about what one kill, restart and rejoin costs on a 2-core machine


class Run:
    """One scenario's broker, stream, references and workers (all stopped by :meth:`close`)."""

    def __init__(self, args: argparse.Namespace, broker_dir: Path, work: Path) -> None:
        self.args = args
        self.broker_dir = broker_dir
        self.work = work
        self.events: list[Event] = known_stream(args.customers, args.days, args.seed, PARTITIONS)
        self.reference = reference_outputs(self.events, PARTITIONS)
        self.replayed = replay_states(self.events)
        self.isolation = (
            "read_committed" if args.guarantee == "exactly_once" else "read_uncommitted"
        )
        self.env = {**PINNED, **FAST_REJOIN, "PROCESSING_GUARANTEE": args.guarantee}
        self.workers: list[WorkerProcess] = []
        self.expected = Outputs()
        self.baseline_dir = work / "baseline"
        self.baseline_settings: Settings | None = None

    @property
    def bootstrap(self) -> str:
        """Return the broker's address."""
        info = kafka_local.read_state(self.broker_dir)
        assert info is not None
        return info.bootstrap

    def worker(self, settings: Settings, name: str) -> WorkerProcess:
        """Return a new (not started) worker with its own data dir."""
        worker = WorkerProcess(settings, self.work / name, **self.env)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        """Stop every worker this run started."""
        for worker in self.workers:
            worker.stop()

    def rate_for(self, rounds: int) -> float:
        """Return a feed rate at which the stream outlasts ``rounds`` kill-restart rounds."""
        cap = float(self.args.rate)
        return min(cap, len(self.events) / max(1.0, rounds * RESTART_S))

    def verdict(self, settings: Settings, extra: dict[str, Any]) -> dict[str, Any]:
        """Return the scenario's numbers and whether every invariant held."""
        check = check_run(settings, self.events, self.expected, self.replayed, self.isolation)
        return {**extra, "events": len(self.events), **check.summary(), "ok": check.ok}


def baseline(run: Run) -> dict[str, Any]:
    """Run the stream through an undisturbed worker: the interventions reference."""
    settings = make_settings(run.bootstrap)
    produce_all(settings, run.events)
    worker = WorkerProcess(settings, run.baseline_dir, **run.env)
    run.workers.append(worker)
    began = time.monotonic()
    worker.start().wait_ready()
    wait_caught_up(settings, timeout_s=600)
    took_s = time.monotonic() - began
    worker.stop()
    run.baseline_settings = settings
    run.expected = expected_outputs(
        run.reference, read_outputs(settings, isolation_level=run.isolation)
    )
    return run.verdict(settings, {"scenario": "baseline", "start_to_caught_up_s": took_s})


def scenario_kill(run: Run) -> dict[str, Any]:
    """R1: kill -9 the worker ``--kills`` times while the stream flows."""
    settings = make_settings(run.bootstrap)
    worker = run.worker(settings, "kill")
    worker.start().wait_ready()
    feeder = StreamFeeder(settings, run.events, run.rate_for(run.args.kills)).start()
    probe = EndOffsets(settings, OUTPUT_IDS)
    log = KillLog()
    try:
        kill_and_restart(worker, probe, run.args.kills, random.Random(run.args.seed), log, feeder)
        feeder.join(timeout_s=900)
        wait_caught_up(settings, timeout_s=600)
    finally:
        probe.close()
    worker.stop()
    restarts = sorted(log.restart_to_ready_s)
    return run.verdict(
        settings,
        {
            "scenario": "kill",
            "kills": log.kills,
            "kills_while_stream_flowed": log.kills_mid_stream,
            "restart_to_ready_s_median": round(restarts[len(restarts) // 2], 2),
            "restart_to_ready_s_max": round(restarts[-1], 2),
        },
    )


def scenario_crash(run: Run) -> dict[str, Any]:
    """R6: kill right after a chunk's outputs show, before its offsets are committed."""
    settings = make_settings(run.bootstrap)
    worker = run.worker(settings, "crash")
    worker.start().wait_ready()
    chunks = list(iter_chunks(run.events, run.args.kills + 1))
    probe = EndOffsets(settings, OUTPUT_IDS)
    in_window = 0
    try:
        for chunk in chunks[:-1]:
            seen = probe.total()
            produce_all(settings, chunk)
            wait_progress(probe, seen, 120, worker, "outputs of the new chunk")
            worker.kill()
            in_window += int(not consumer_caught_up(settings, group_of(settings)))
            worker.start().wait_ready()
            wait_caught_up(settings, timeout_s=600)
        produce_all(settings, chunks[-1])
        wait_caught_up(settings, timeout_s=600)
    finally:
        probe.close()
    worker.stop()
    return run.verdict(
        settings,
        {"scenario": "crash", "kills": len(chunks) - 1, "kills_in_window": in_window},
    )


def scenario_scale(run: Run) -> dict[str, Any]:
    """R3: cycles of 1 -> 2 -> 1 workers while the stream flows; no partition starves."""
    settings = make_settings(run.bootstrap)
    cycles = max(1, run.args.kills // 5)
    first = run.worker(settings, "scale-first")
    first.start().wait_ready()
    feeder = StreamFeeder(settings, run.events, run.rate_for(cycles * 3)).start()
    phases: list[list[str]] = []
    for cycle in range(cycles):
        second = run.worker(settings, f"scale-second-{cycle}")
        second.start().wait_ready()
        phases.append(wait_every_partition_advances(settings, 120, "progress with two workers"))
        second.stop()
        phases.append(wait_every_partition_advances(settings, 120, "progress with one worker"))
    mid_stream = not feeder.done
    feeder.join(timeout_s=900)
    wait_caught_up(settings, timeout_s=600)
    first.stop()
    return run.verdict(
        settings,
        {
            "scenario": "scale",
            "cycles": cycles,
            "rebalances": cycles * 2,
            "phases_with_backlog": sum(1 for phase in phases if phase),
            "stream_flowing_at_last_scale_in": mid_stream,
        },
    )


def scenario_broker(run: Run) -> dict[str, Any]:
    """R4: SIGKILL the broker ``--broker-kills`` times mid-stream; the worker carries on."""
    settings = make_settings(run.bootstrap)
    worker = run.worker(settings, "broker")
    worker.start().wait_ready()
    rounds = run.args.broker_kills
    feeder = StreamFeeder(settings, run.events, run.rate_for(rounds * 3)).start()
    probe = EndOffsets(settings, OUTPUT_IDS)
    down_s: list[float] = []
    try:
        for _ in range(rounds):
            wait_progress(probe, probe.total() + 100, 120, worker, "outputs before a broker kill")
            info = kafka_local.read_state(run.broker_dir)
            assert info is not None
            os.kill(info.pid, signal.SIGKILL)
            wait_for(lambda: not kafka_local.broker_status(run.broker_dir)[0], 30, "broker gone")
            began = time.monotonic()
            kafka_local.broker_up(run.broker_dir)
            down_s.append(round(time.monotonic() - began, 1))
    finally:
        probe.close()
    feeder.join(timeout_s=900)
    wait_caught_up(settings, timeout_s=600)
    assert worker.process is not None
    alive = worker.process.poll() is None
    worker.stop()
    return run.verdict(
        settings,
        {
            "scenario": "broker",
            "broker_kills": rounds,
            "broker_restart_s": down_s,
            "worker_survived": alive,
        },
    )


def scenario_restore(run: Run) -> dict[str, Any]:
    """R5: delete the undisturbed worker's RocksDB; time the restore; compare the tables."""
    assert run.baseline_settings is not None
    before = read_rocksdb(run.baseline_dir)
    for store in list((run.baseline_dir / "worker").rglob("*.db")):
        shutil.rmtree(store)
    worker = WorkerProcess(run.baseline_settings, run.baseline_dir, **run.env)
    run.workers.append(worker)
    began = time.monotonic()
    worker.start().wait_ready(timeout_s=600)
    ready_s = time.monotonic() - began
    recovery_s = metric_sum(worker.get("/metrics")[1], "churnstream_recovery_seconds_sum")
    worker.stop()
    after = read_rocksdb(run.baseline_dir)
    rows = sum(len(table) for table in before.values())
    return {
        "scenario": "restore",
        "table_rows": rows,
        "start_to_ready_s": round(ready_s, 2),
        "recovery_s_metric": round(recovery_s, 3),
        "ok": after == before and rows > 0,
    }


SCENARIOS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "kill": scenario_kill,
    "crash": scenario_crash,
    "scale": scenario_scale,
    "broker": scenario_broker,
    "restore": scenario_restore,
}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios; print their numbers; return 1 if an invariant broke."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--broker-kills", type=int, default=3)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=150.0, help="max feed rate, events/s")
    parser.add_argument(
        "--guarantee", choices=("at_least_once", "exactly_once"), default="at_least_once"
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {sorted(SCENARIOS)}")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="churnstream-faults-") as tmp:
        broker_dir = Path(tmp) / "kafka"
        kafka_local.broker_up(broker_dir)
        run = Run(args, broker_dir, Path(tmp))
        try:
            for name in ["baseline", *chosen]:
                result = baseline(run) if name == "baseline" else SCENARIOS[name](run)
                result["guarantee"] = args.guarantee
                results.append(result)
                print(json.dumps(result, sort_keys=True, default=str), flush=True)
        finally:
            run.close()
            kafka_local.broker_down(broker_dir)
    print(json.dumps({"faults_long": results}, sort_keys=True, default=str))
    return 0 if all(result.get("ok") for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
