"""``make bench``: churnstream's throughput, latency, restore and state size in one run.

Usage: ``python bench/run.py [--quick] [--profile] [--budget-s S] [--keep] [--only STEPS]``

Starts its own local Kafka broker (a temporary data dir), produces the input once (Avro,
keyed by customer id, 4 partitions), then runs, one after another, each as its own process:
(a) raw aiokafka batches, (b) a bare Faust agent, (c) the naive Faust design, (e) Quix
Streams doing (c)'s work, (d) the churnstream worker (then the latency at half its capacity,
then its state on disk), the restore of N customers' state, and a scale-out run of two
workers. Every process it started is stopped at the end, also on Ctrl-C. Prints a table,
writes ``bench/out/results.json`` and prints the same JSON object as its last line.

Throughput is records processed over the window from the first record seen processed to
the last; a scenario that does not finish within its time cap (the whole run must stay in
the ``--budget-s``) is measured over the records it did process and marked partial.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import scenarios
from benchkit import Children, Measured
from report import ratio_lines, table, target_lines, targets
from report import summary as make_summary

from streams.io.kafka_local import BrokerInfo, broker_down, broker_up

OUT_DIR = Path(__file__).resolve().parent / "out"


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes and time caps of one run."""

    events: int
    customers: int
    restore_customers: int
    half_load_s: float  # measured
    standalone_cap_s: float
    full_cap_s: float
    budget_s: float
    partitions: int = 4
    # Sent at the same rate before the measured part (left out): the broker's JVM is still
    # compiling the paths a live trickle of records takes when (d)'s backlog ends.
    half_load_warmup_s: float = 30.0


def plan_of(args: argparse.Namespace) -> Plan:
    """Return the plan the flags ask for (``--quick``: a 20k-event smoke run)."""
    if args.quick:
        return Plan(
            20_000, 3_000, 20_000, 6.0, 10.0, 30.0, args.budget_s or 200.0, half_load_warmup_s=3.0
        )
    return Plan(
        args.events,
        args.customers,
        args.restore_customers,
        20.0,
        25.0,
        180.0,
        args.budget_s or 510.0,
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Return the command-line flags."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="20k events: a smoke test")
    parser.add_argument("--events", type=int, default=200_000, help="at least this many events")
    parser.add_argument("--customers", type=int, default=50_000, help="customers (>= 50k)")
    parser.add_argument(
        "--restore-customers", type=int, default=1_000_000, help="states to restore (1M: measured)"
    )
    parser.add_argument("--budget-s", type=float, default=None, help="wall-clock budget")
    parser.add_argument("--seed", type=int, default=7, help="input seed")
    parser.add_argument("--profile", action="store_true", help="py-spy the worker during (d)")
    parser.add_argument(
        "--half-load-rate",
        type=float,
        default=0.0,
        help="for development: send the latency phase at this rate, not half of (d)'s",
    )
    parser.add_argument("--no-simulator", action="store_true", help="use the bench generator")
    parser.add_argument("--fresh-input", action="store_true", help="ignore the input cache")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated steps to run (raw,bare,naive,quix,full,restore,scale_out); "
        "for development: the targets need them all",
    )
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    """Run the benchmark; return the exit code (0, or 130 when interrupted)."""
    args = parse_args(argv)
    plan = plan_of(args)
    signal.signal(signal.SIGTERM, _interrupt)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="churnstream-bench-"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHURNSTREAM_")}
    children = Children(env)
    broker: BrokerInfo | None = None
    run = scenarios.Run(plan, work_dir, OUT_DIR, children, args)
    try:
        run.log(f"machine: {os.cpu_count()} CPUs, load average {_loadavg()}; work dir {work_dir}")
        broker = broker_up(work_dir / "kafka")
        run.log(f"broker up at {broker.bootstrap} (pid {broker.pid})")
        run.broker = broker
        run.execute()
    except KeyboardInterrupt:
        print("interrupted: stopping everything the bench started", file=sys.stderr)
        return 130
    finally:
        children.stop_all()
        if broker is not None:
            broker_down(work_dir / "kafka")
        if args.keep:
            print(f"kept {work_dir}", file=sys.stderr)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    report(run.measured, run.extra, run.errors)
    return 0


def _loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def report(measured: dict[str, Measured], extra: dict[str, Any], errors: dict[str, str]) -> None:
    """Print the table and targets, write results.json, print the JSON line last."""
    found = targets(measured, extra)
    extra["load_average_at_end"] = _loadavg()
    print()
    print("\n".join(table(measured, errors)))
    print()
    print("ratios (each over the records both scenarios processed):")
    print("\n".join(ratio_lines(measured)))
    print()
    print("targets (issue 8):")
    print("\n".join(target_lines(found)))
    for key, value in extra.items():
        if key.startswith("note_"):
            print(f"note: {value}")
    summary = make_summary(measured, extra, found)
    if errors:
        summary["errors"] = errors
    (OUT_DIR / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
