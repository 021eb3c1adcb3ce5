"""The benchmark's steps in order; :class:`Run` holds what each measured.

A step that fails is recorded in ``errors`` (its JSON value stays null) and the next step
runs: one broken scenario must not hide the others' numbers.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchkit import (
    Child,
    Children,
    Measured,
    cpu_seconds,
    dir_bytes,
    measured_from_progress,
    peak_rss_mb,
    read_progress,
)
from input_cache import load_input
from inputs import (
    Input,
    Record,
    encode_records,
    half_load_events,
    produce_records,
)
from latency import half_load
from profiling import Profiler
from restart_and_scale import STARTUP_TIMEOUT_S, restore, scale_out
from worker_runs import (
    BenchWorker,
    read_customers,
    settle,
    wait_scored,
    watch_throughput,
)

from streams.io.kafka_clients import create_topics
from streams.io.kafka_local import BrokerInfo
from streams.settings import INPUT_TOPICS, Settings

if TYPE_CHECKING:
    from run import Plan

LOG_EVERY_S = 10.0


class Run:
    """One benchmark run: the plan, the processes, and every measurement so far."""

    def __init__(
        self,
        plan: Plan,
        work_dir: Path,
        out_dir: Path,
        children: Children,
        args: argparse.Namespace,
    ) -> None:
        self.plan = plan
        self.work_dir = work_dir
        self.out_dir = out_dir
        self.children = children
        self.args = args
        self.started = time.monotonic()
        self.broker: BrokerInfo | None = None
        self.measured: dict[str, Measured] = {}
        self.extra: dict[str, Any] = {"quick": bool(args.quick)}
        self.errors: dict[str, str] = {}
        self.input: Input | None = None
        self.full_states: dict[str, bytes] | None = None
        self.half_records: list[Record] = []
        self.half_load_started = False
        self._logged_at = 0.0

    # -- helpers ----------------------------------------------------------------------
    def log(self, message: str) -> None:
        """Print a progress line with the time since the run started."""
        print(f"[bench {time.monotonic() - self.started:6.1f}s] {message}", flush=True)

    def remaining_s(self) -> float:
        """Return the seconds left of the run's budget."""
        return self.plan.budget_s - (time.monotonic() - self.started)

    @property
    def bootstrap(self) -> str:
        """Return the broker's bootstrap address."""
        assert self.broker is not None
        return str(self.broker.bootstrap)

    def settings(self, prefix: str) -> Settings:
        """Return settings for the bench broker with topic ``prefix``."""
        return Settings(broker=self.bootstrap, topic_prefix=prefix, partitions=self.plan.partitions)

    def step(self, key: str, action: Callable[[], None]) -> None:
        """Run one step; a failure is recorded under ``key`` and the run goes on."""
        try:
            action()
        except Exception as exc:  # any failure of one scenario: report it, run the next
            lines = str(exc).strip().splitlines() or [""]
            text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
            self.errors[key] = f"{type(exc).__name__}: {text[:400]}"
            self.log(f"{key} failed: {self.errors[key]}")

    def progress_logger(self, name: str, expected: int) -> Callable[[int], None]:
        def tick(count: int) -> None:
            now = time.monotonic()
            if now - self._logged_at >= LOG_EVERY_S:
                self._logged_at = now
                self.log(f"{name}: {count:,}/{expected:,} events")

        return tick

    # -- the run --------------------------------------------------------------------
    def execute(self) -> None:
        """Run every step in order."""
        self.prepare_input()
        only = set(self.args.only.split(",")) if self.args.only else None
        for key, script, extra in (
            ("raw", "aiokafka_raw.py", []),
            ("bare", "faust_bare.py", []),
            ("naive", "faust_naive.py", ["--prefix", "in-"]),
            ("quix", "quix_peer.py", ["--prefix", "in-"]),
        ):
            if only is None or key in only:
                self.step(key, functools.partial(self.standalone_retried, key, script, extra))
        for key, action in (
            ("full", self.full_worker),
            ("restore", functools.partial(restore, self)),
            ("scale_out", functools.partial(scale_out, self)),
        ):
            if only is None or key in only:
                self.step(key, action)
        self.extra["wall_s"] = round(time.monotonic() - self.started, 1)

    def prepare_input(self) -> None:
        """Load or make the input and produce it to the main prefix's input topics."""
        self.log(f"input: >= {self.plan.events:,} events of {self.plan.customers:,} customers")
        loaded = load_input(self.plan, self.args, self.out_dir / "cache", self.log)
        self.input = loaded
        self.extra["input"] = {
            "events": len(loaded.records),
            "customers": loaded.customers,
            "by_topic": loaded.counts,
            "source": loaded.source,
            "partitions": self.plan.partitions,
        }
        main = self.settings("in-")
        create_topics(main, self.plan.partitions)
        seconds = produce_records(main, loaded.records, self.plan.partitions)
        self.log(f"produced {len(loaded.records):,} records to in-* in {seconds:.1f}s")

    def standalone_retried(self, key: str, script: str, extra: Sequence[str]) -> None:
        """Run :meth:`standalone`; the Quix peer gets one more try with a new group.

        Quix Streams 3.28 sometimes stops with ``ValueError: Invalid offset`` in the buffer
        that orders its three concatenated topics; one crash must not leave (e) empty.
        """
        try:
            self.standalone(key, script, extra)
        except RuntimeError as exc:
            if key != "quix":
                raise
            first = " | ".join(str(exc).splitlines()[-2:])[:300]
            self.extra["note_quix"] = f"Quix Streams crashed once and was run again: {first}"
            self.log(f"{key}: crashed, one more try with a new consumer group")
            self.standalone(key, script, extra, attempt=2)

    def standalone(self, key: str, script: str, extra: Sequence[str], attempt: int = 1) -> None:
        """Run one standalone scenario script until it consumed the input (or its cap)."""
        assert self.input is not None
        assert self.broker is not None
        if key == "quix" and importlib.util.find_spec("quixstreams") is None:
            msg = "quixstreams is not installed (pip install -e '.[bench]')"
            raise RuntimeError(msg)
        expected = len(self.input.records)
        progress_path = self.work_dir / f"{key}-{attempt}.progress.json"
        topics = ",".join(f"in-{name}" for name in INPUT_TOPICS)
        args = [
            *("--broker", self.bootstrap, "--topics", topics, "--expected", str(expected)),
            *("--progress", str(progress_path), "--group", f"bench-{key}-{attempt}"),
            *("--partitions", str(self.plan.partitions)),
            *("--state-dir", str(self.work_dir / f"{key}-{attempt}")),
            *extra,
        ]
        child = self.children.python(key, script, args, self.work_dir / f"{key}-{attempt}.log")
        self.log(f"{key}: started {script}")
        cap_s = min(self.plan.standalone_cap_s, max(10.0, self.remaining_s() - 300.0))
        try:
            peak_mb, broker_cpu = self._watch_standalone(child, key, progress_path, cap_s)
        finally:
            child.stop(timeout_s=10.0)
        final = read_progress(progress_path)
        assert final is not None
        result = measured_from_progress(key, final, peak_mb, broker_cpu)
        self.measured[key] = result
        self.log(f"{key}: {result.events_per_s:,.0f} events/s ({result.total:,} records)")

    def _watch_standalone(
        self, child: Child, key: str, progress_path: Path, cap_s: float
    ) -> tuple[float, float]:
        """Wait until the scenario is done or its window reached ``cap_s``.

        Returns its peak RSS (MiB) and the broker's CPU seconds during the window.
        """
        assert self.broker is not None
        started = time.monotonic()
        window_opened: float | None = None
        broker_cpu_first = 0.0
        while True:
            body = read_progress(progress_path)
            now = time.monotonic()
            if body is not None and body["samples"] and window_opened is None:
                window_opened = now
                broker_cpu_first = cpu_seconds(self.broker.pid)
            if body is not None and body["done"]:
                break
            if not child.alive():
                code = child.process.returncode if child.process else None
                raise RuntimeError(f"{key} exited with {code}:\n{child.log_tail(5)}")
            if window_opened is None and now - started > STARTUP_TIMEOUT_S:
                raise RuntimeError(f"{key} consumed nothing in {STARTUP_TIMEOUT_S:.0f}s")
            if window_opened is not None and now - window_opened >= cap_s:
                break
            if body is not None:
                self.progress_logger(key, body["expected"])(int(body["count"]))
            time.sleep(0.2)
        return peak_rss_mb(child.pid), cpu_seconds(self.broker.pid) - broker_cpu_first

    def full_worker(self) -> None:
        """(d): the worker over the input, then latency at half load; its state on disk."""
        assert self.input is not None
        assert self.broker is not None
        expected = len(self.input.records)
        data_dir = self.work_dir / "full"
        worker = BenchWorker.start(self.children, "full", self.bootstrap, "in-", data_dir)
        try:
            ready_s = worker.wait_ready(STARTUP_TIMEOUT_S)
            self.extra["worker_start_to_ready_s_empty"] = round(ready_s, 2)
            self.log(f"full: worker ready after {ready_s:.1f}s (empty state)")
            result = self._watch_full(worker, expected)
            if result.complete:
                known = sorted({record.customer_id for record in self.input.records})
                self.step("half_load", lambda: self.half_load(worker, "in-", known))
        finally:
            if worker.child.alive() and "full" in self.measured and self.measured["full"].complete:
                settle(worker)  # outputs and changelog writes of the last events in flight
            self.extra["worker_stop_s"] = worker.stop()
        states = read_customers(self.settings("in-"))
        disk = dir_bytes(data_dir / "worker")
        # The scale-out replays exactly what (d) read, half-load records included.
        sent_in_part = "half_load" in self.errors and self.half_load_started
        self.full_states = states if result.complete and not sent_in_part else None
        self.extra["state_customers"] = len(states)
        self.extra["state_disk_bytes"] = disk
        self.extra["state_bytes_per_customer"] = round(disk / max(1, len(states)), 1)
        self.extra["state_json_bytes_per_customer"] = round(
            sum(map(len, states.values())) / max(1, len(states)), 1
        )
        if not result.complete:
            self.step("half_load", self.half_load_on_fresh_worker)

    def _watch_full(self, worker: BenchWorker, expected: int) -> Measured:
        assert self.broker is not None
        profiler = (
            Profiler(self.children, self.out_dir, self.work_dir) if self.args.profile else None
        )
        log_tick = self.progress_logger("full", expected)

        def tick(count: int) -> None:
            log_tick(count)
            if profiler is not None and count > 0:
                profiler.start_once(worker.child.pid, 10.0 if self.args.quick else 30.0)

        cap_s = min(self.plan.full_cap_s, max(30.0, self.remaining_s() - 150.0))
        result = watch_throughput("full", [worker], expected, cap_s, self.broker.pid, tick)
        self.measured["full"] = result
        self.extra["peak_rss_mb"] = round(result.peak_rss_mb or 0.0, 1)
        self.log(f"full: {result.events_per_s:,.0f} events/s ({result.total:,} records)")
        if profiler is not None:
            self.extra["profile"] = profiler.finish(self.log)
        return result

    def half_load_on_fresh_worker(self) -> None:
        """Latency when (d) did not catch up in time: a new worker, own topics, no backlog."""
        settings = self.settings("hl-")
        create_topics(settings, self.plan.partitions)
        worker = BenchWorker.start(
            self.children, "half-load", self.bootstrap, "hl-", self.work_dir / "half-load"
        )
        try:
            worker.wait_ready(STARTUP_TIMEOUT_S)
            self.extra["note_half_load"] = (
                "(d) did not finish its input within its cap, so the latency was measured on "
                "a fresh worker with its own topics and an empty state (no backlog)"
            )
            self.half_load(worker, "hl-", [])
        finally:
            worker.stop()

    def half_load(self, worker: BenchWorker, prefix: str, known: Sequence[str]) -> None:
        """Send records at half of (d)'s rate; p50/p99 from record sent to risk change.

        Half the records' customers are drawn from ``known`` (when given), half are new.
        Returns once the worker scored them all, so its state includes them.
        """
        assert self.input is not None
        full = self.measured["full"]
        rate = self.args.half_load_rate or max(10.0, full.events_per_s / 2)
        warmup_s = self.plan.half_load_warmup_s
        count = int(rate * (warmup_s + self.plan.half_load_s))
        self.extra["half_load_settle_s"] = round(settle(worker), 1)
        scored = worker.events_scored()
        events = half_load_events(known, count, self.input.end_time, rate, self.args.seed + 1)
        records = encode_records(events)
        sending_s = warmup_s + self.plan.half_load_s
        self.log(
            f"half load: {count:,} records at {rate:,.0f}/s for {sending_s:.0f}s"
            f" (the first {warmup_s:.0f}s not measured)"
        )
        self.half_load_started = True
        cpu_before, wall_before = cpu_seconds(worker.child.pid), time.monotonic()
        result = half_load(self.settings(prefix), records, rate, self.plan.partitions, warmup_s)
        # The worker's CPU over the sending: how close to its limit the half load is.
        cpu_share = (cpu_seconds(worker.child.pid) - cpu_before) / (time.monotonic() - wall_before)
        wait_scored(worker, scored + len(records), 60.0)
        if prefix == "in-":
            self.half_records = records
        self.extra["p50_ms_at_half_load"] = _round(result.p50_ms)
        self.extra["p99_ms_at_half_load"] = _round(result.p99_ms)
        self.extra["half_load"] = {
            "rate_per_s": round(rate, 1),
            "records": result.sent,
            "warmup_s": warmup_s,
            "latency_samples": result.samples,
            "max_ms": _round(result.max_ms),
            "unmatched_risk_changes": result.unmatched_risk_changes,
            "p50_ms_by_5s_of_sending": result.p50_ms_by_5s,
            "worker_cpu_share_while_sending": round(cpu_share, 2),
            "from_send_ms_p50_p99": [_round(value) for value in result.from_send_ms],
            "in_leg_ms_p50_p99": [_round(value) for value in result.in_leg_ms],
            "out_leg_ms_p50_p99": [_round(value) for value in result.out_leg_ms],
            "worker": "(d)" if prefix == "in-" else "fresh, empty state",
        }
        self.log(
            f"half load: p50 {_round(result.p50_ms)} ms, p99 {_round(result.p99_ms)} ms; "
            f"p50 per 5 s of sending: {result.p50_ms_by_5s}; worker CPU {cpu_share:.0%} of a core; "
            f"legs p50/p99: in {_legs(result.in_leg_ms)}, out {_legs(result.out_leg_ms)} ms; "
            f"from the bench's send call {_legs(result.from_send_ms)} ms"
        )


def _legs(p50_p99: tuple[float | None, float | None]) -> str:
    return "/".join(str(_round(value)) for value in p50_p99)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)
