"""The ``churnstream`` command: parses flags, builds Settings once, and runs one subcommand."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from streams.errors import ChurnstreamError, SettingsError
from streams.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        msg = f"expected a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from exc
    if value <= 0:
        msg = f"expected a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        msg = f"expected a positive number, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from exc
    if not value > 0:
        msg = f"expected a positive number, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        msg = f"expected a port 1-65535, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        msg = f"no such file: {text!r}"
        raise argparse.ArgumentTypeError(msg)
    if not (path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz")):
        msg = f"expected a .jsonl or .jsonl.gz file, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return path


def _utc_time(text: str) -> datetime:
    from streams.core.events import parse_event_time

    try:
        return parse_event_time(text, field="--as-of")
    except ChurnstreamError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _sim_start(text: str) -> datetime:
    from streams.sim.shop import parse_start

    try:
        return parse_start(text)
    except ChurnstreamError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, as argparse does
        self.exit(2, f"churnstream: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every subcommand."""
    parser = _Parser(prog="churnstream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    kafka = commands.add_parser("kafka", help="local single-node Apache Kafka (KRaft), no Docker")
    kafka_commands = kafka.add_subparsers(dest="kafka_command", required=True)
    up = kafka_commands.add_parser("up", help="fetch (once), start, wait until it answers")
    up.add_argument("--port", type=_port, help="broker port (default: a free one)")
    for sub in (up, kafka_commands.add_parser("down"), kafka_commands.add_parser("status")):
        sub.add_argument("--data-dir", type=Path, help="default: <CHURNSTREAM_DATA_DIR>/kafka")

    topics = commands.add_parser("topics", help="topic administration")
    topics_commands = topics.add_subparsers(dest="topics_command", required=True)
    create = topics_commands.add_parser("create", help="create every topic (idempotent)")
    create.add_argument("--broker")
    create.add_argument("--partitions", type=_positive_int)

    produce = commands.add_parser("produce", help="publish an events file to the input topics")
    produce.add_argument("--broker")
    produce.add_argument("--events", type=_existing_file, required=True)

    tail = commands.add_parser("tail", help="decode and print records of a churnstream topic")
    tail.add_argument("--broker")
    tail.add_argument("--topic", required=True)
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--max-records", type=_positive_int)
    tail.add_argument("--timeout-s", type=_positive_float, default=10.0)

    replay = commands.add_parser("replay", help="score an events file in process, no Kafka")
    replay.add_argument("--events", type=_existing_file, required=True)
    replay.add_argument("--as-of", type=_utc_time, required=True)
    replay.add_argument("--out", type=Path, required=True)
    replay.add_argument("--horizon-days", type=_positive_int)

    evaluate = commands.add_parser(
        "evaluate", help="quality of scores: on a real events file, or against simulator truth"
    )
    evaluate.add_argument("--events", type=_existing_file)
    evaluate.add_argument("--truth", type=_existing_file, help="the simulator's truth file")
    evaluate.add_argument("--scores", type=Path, help="a replay scores CSV (with --truth)")
    evaluate.add_argument("--as-of", type=_utc_time, help="when --scores was scored")
    evaluate.add_argument("--interventions", type=_existing_file)
    evaluate.add_argument("--broker", help="read scores/orders/interventions from Kafka")
    evaluate.add_argument("--horizon-days", type=_positive_int)
    evaluate.add_argument("--window-days", type=_positive_float)
    evaluate.add_argument("--timeout-s", type=_positive_float, default=5.0)

    sim = commands.add_parser("simulate", help="synthetic shop traffic with ground truth")
    sim.add_argument("--broker")
    sim.add_argument("--rate", type=_positive_float, default=1000.0, help="events per second")
    sim.add_argument("--customers", type=_positive_int, default=10_000)
    sim.add_argument("--duration", type=_positive_float, help="stop after S wall seconds")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--speed", type=_positive_float, default=1.0, help="sim days per second")
    sim.add_argument("--days", type=_positive_float, help="simulated span (file default 365)")
    sim.add_argument("--acquisition-days", type=_positive_float, help="signups over N days")
    sim.add_argument("--start", type=_sim_start, help="default 2024-01-01T00:00:00Z")
    sim.add_argument("--effects", type=Path, help="JSON file of true intervention effects")
    sim.add_argument("--out", type=Path, help="write a .jsonl[.gz] events file (no Kafka)")
    sim.add_argument("--truth", type=Path, help="truth JSON Lines file")
    sim.add_argument("--follow-group", help="never run ahead of this consumer group")
    sim.add_argument("--max-lag-events", type=_positive_int, default=3000)

    report = commands.add_parser("report", help="reports over the topics or files")
    reports = report.add_subparsers(dest="report_command", required=True, parser_class=_Parser)
    uplift = reports.add_parser("uplift", help="retention uplift per segment with a 95 % CI")
    uplift.add_argument("--broker")
    uplift.add_argument("--interventions", type=_existing_file, help="JSONL of decisions")
    uplift.add_argument("--events", type=_existing_file, help="events file with the orders")
    uplift.add_argument("--window-days", type=_positive_float, default=14.0)
    uplift.add_argument("--timeout-s", type=_positive_float, default=5.0)

    worker = commands.add_parser("worker", help="the Faust worker: agents, tables, web views")
    worker.add_argument("--broker")
    worker.add_argument("--web-port", type=_port)
    worker.add_argument("--data-dir", type=Path)

    demo = commands.add_parser("demo", help="what `make demo` runs")
    demo.add_argument("--seconds", type=_positive_float, help="stop after N seconds (exit 0)")
    demo.add_argument("--data-dir", type=Path)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "broker": getattr(args, "broker", None),
        "web_port": getattr(args, "web_port", None),
        "horizon_days": getattr(args, "horizon_days", None),
    }
    if args.command == "worker":
        overrides["data_dir"] = args.data_dir
    return Settings.load(os.environ, overrides)


def _kafka_data_dir(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.data_dir) if args.data_dir is not None else settings.data_dir / "kafka"


def _cmd_kafka(args: argparse.Namespace, settings: Settings) -> int:
    from streams.io import kafka_local

    data_dir = _kafka_data_dir(args, settings)
    if args.kafka_command == "up":
        info = kafka_local.broker_up(data_dir, port=args.port)
        print(info.bootstrap)
        return 0
    if args.kafka_command == "down":
        stopped = kafka_local.broker_down(data_dir)
        print("no broker was running" if stopped is None else f"stopped broker pid {stopped.pid}")
        return 0
    running, recorded = kafka_local.broker_status(data_dir)
    if running and recorded is not None:
        print(f"running pid={recorded.pid} bootstrap={recorded.bootstrap} log={recorded.log_path}")
    else:
        print(f"stopped data_dir={data_dir.resolve()}")
    return 0 if running else 3


def _cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from streams.io.kafka_clients import create_topics

    created = create_topics(settings, partitions=args.partitions)
    print(f"created {len(created)} topic(s): {', '.join(created) or 'all existed already'}")
    return 0


def _cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from streams.io.events_file import read_events
    from streams.io.kafka_clients import produce_events

    # validate the whole file first so a bad line never leaves half a file on the topics
    total = sum(1 for _ in read_events(args.events))
    counts = produce_events(settings, read_events(args.events))
    summary = ", ".join(f"{topic}={count}" for topic, count in sorted(counts.items()))
    print(f"produced {total} events ({summary})")
    return 0


def _cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    from streams.io.kafka_clients import ALL_TOPICS, iter_topic, print_records

    if args.topic not in ALL_TOPICS:
        msg = f"--topic: unknown topic {args.topic!r}; one of {', '.join(ALL_TOPICS)}"
        raise SettingsError(msg)
    records = iter_topic(
        settings, args.topic, args.from_beginning, args.max_records, args.timeout_s
    )
    print_records(records, _write_flush)
    return 0


def _write_flush(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from streams.replay import replay_file_to_csv

    count = replay_file_to_csv(args.events, args.as_of, args.out, settings)
    print(f"wrote {count} customer scores to {args.out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    if args.truth is not None:
        from streams.sim.truth_report import evaluate_truth

        report = evaluate_truth(
            args.truth,
            scores_csv=args.scores,
            as_of=args.as_of,
            events_file=args.events,
            interventions_file=args.interventions,
            settings=settings if args.broker else None,
            horizon_days=float(settings.horizon_days),
            window_days=args.window_days,
            timeout_s=args.timeout_s,
        )
        print(report, end="")
        return 0
    if args.events is None:
        msg = "evaluate: give --events FILE (real data) or --truth FILE (simulated)"
        raise SettingsError(msg)
    from streams.evaluate import evaluate_file

    print(evaluate_file(args.events, settings))
    return 0


def _cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from streams.sim.runner import simulate

    summary = simulate(
        settings,
        customers=args.customers,
        seed=args.seed,
        rate=args.rate,
        speed=args.speed,
        duration_s=args.duration,
        days=args.days,
        acquisition_days=args.acquisition_days,
        start=args.start,
        effects_path=args.effects,
        out=args.out,
        truth=args.truth,
        follow_group=args.follow_group,
        max_lag_events=args.max_lag_events,
        on_progress=lambda progress: print(progress.line(), flush=True),
    )
    print(summary.line())
    return 0


def _cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from streams.uplift_report import report_uplift

    text = report_uplift(
        None if args.interventions else settings,
        interventions_file=args.interventions,
        events_file=args.events,
        window_days=args.window_days,
        timeout_s=args.timeout_s,
    )
    print(text, end="")
    return 0


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.worker.main import run_worker

    return run_worker(settings)


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from streams.demo import run_demo

    seconds = args.seconds
    if seconds is None and os.environ.get("DEMO_SECONDS"):
        seconds = _positive_float(os.environ["DEMO_SECONDS"])
    return run_demo(settings, seconds=seconds, data_dir=args.data_dir)


HANDLERS: dict[str, Handler] = {
    "kafka": _cmd_kafka,
    "topics": _cmd_topics,
    "produce": _cmd_produce,
    "tail": _cmd_tail,
    "replay": _cmd_replay,
    "simulate": _cmd_simulate,
    "evaluate": _cmd_evaluate,
    "report": _cmd_report,
    "worker": _cmd_worker,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``churnstream`` command; return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
        if args.command != "worker":  # the worker hands its own set-up to Faust
            from streams.logging_setup import configure_logging

            configure_logging(settings, level="WARNING")
            # kafka-python logs every refused connection while it retries; a command that
            # gives up reports the failure itself, in one line.
            logging.getLogger("kafka").setLevel(logging.CRITICAL)
        return HANDLERS[args.command](args, settings)
    except argparse.ArgumentTypeError as exc:
        print(f"churnstream: error: {exc}", file=sys.stderr)
        return 2
    except ChurnstreamError as exc:
        print(f"churnstream: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
