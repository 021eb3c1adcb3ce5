"""Plumbing shared by the benchmark scripts: child processes, /proc readings, progress files.

The orchestrator (``bench/run.py``) starts every scenario as its own process so CPU time and
peak RSS are per scenario. Standalone scenario scripts report through a small JSON progress
file (:class:`Progress`); the orchestrator reads it with :func:`read_progress`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

CLOCK_TICKS_PER_S: Final[int] = os.sysconf("SC_CLK_TCK")
PROGRESS_EVERY_S: Final[float] = 0.5


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds ``pid`` has used (all its threads); 0 if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    after = stat.rsplit(")", 1)[1].split()
    user_ticks, system_ticks = int(after[11]), int(after[12])
    return (user_ticks + system_ticks) / CLOCK_TICKS_PER_S


def peak_rss_mb(pid: int) -> float:
    """Return the peak resident set size of ``pid`` in MiB (VmHWM); 0 if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def dir_bytes(path: Path) -> int:
    """Return the total size in bytes of the regular files under ``path``."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Return the nearest-rank ``fraction`` percentile of ``values`` (None if empty).

    >>> percentile([4.0, 1.0, 3.0, 2.0], 0.5)
    2.0
    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.99)
    4.0
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


class Child:
    """One process the bench started: own session (Ctrl-C reaches only us), log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str]):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """Return the process id (the child must have been started)."""
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def start(self) -> Child:
        """Start the process in its own session, stdout and stderr to the log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        """Return whether the process runs."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """Return the last lines of the log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the process group with SIGTERM, then SIGKILL after ``timeout_s``; reap it."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


class Children:
    """Every process the bench started, so one ``stop_all`` stops them (also on Ctrl-C)."""

    def __init__(self, base_env: dict[str, str]) -> None:
        self.base_env = base_env
        self.started: list[Child] = []

    def start(
        self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> Child:
        """Start and remember a child with the base environment plus ``env``."""
        child = Child(name, argv, log_path, {**self.base_env, **(env or {})})
        self.started.append(child)
        return child.start()

    def python(self, name: str, script: str, args: Sequence[str], log_path: Path) -> Child:
        """Start ``bench/<script>`` with this interpreter."""
        path = Path(__file__).resolve().parent / script
        return self.start(name, [sys.executable, str(path), *args], log_path)

    def stop_all(self) -> None:
        """Stop every child still running, newest first."""
        for child in reversed(self.started):
            child.stop()


def scenario_args(description: str) -> argparse.ArgumentParser:
    """Return the argument parser every standalone scenario script shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--broker", required=True, help="bootstrap host:port (loopback)")
    parser.add_argument("--topics", required=True, help="comma-separated full topic names")
    parser.add_argument("--expected", type=int, required=True, help="records to consume")
    parser.add_argument("--progress", type=Path, required=True, help="progress JSON file")
    parser.add_argument("--group", required=True, help="consumer group / application id")
    parser.add_argument("--partitions", type=int, default=4, help="input partitions")
    parser.add_argument("--state-dir", type=Path, default=None, help="state directory")
    return parser


Sample = tuple[float, int, float]  # (wall-clock epoch s, records so far, CPU s so far)


class Progress:
    """Counts records in a scenario process and writes its samples to a JSON file.

    A sample is taken at the first record (the window opens), every ``PROGRESS_EVERY_S``
    and when ``expected`` records were counted (``done``). Times are wall-clock epoch
    seconds (comparable across processes); CPU is ``time.process_time()`` of the process.
    """

    def __init__(self, path: Path, expected: int) -> None:
        self.path = path
        self.expected = expected
        self.count = 0
        self.samples: list[Sample] = []
        self.done = False
        self._written_at = 0.0

    def _sample(self) -> None:
        self.samples.append((time.time(), self.count, time.process_time()))

    def add(self, records: int = 1) -> bool:
        """Count ``records`` more; return True when the expected count was just reached."""
        self.count += records
        if not self.samples:
            # The first batch arrived before the window opened: it is not in the rate.
            self._sample()
        if not self.done and self.count >= self.expected:
            self.done = True
            self._sample()
            self.write()
            return True
        if time.monotonic() - self._written_at >= PROGRESS_EVERY_S:
            self._sample()
            self.write()
        return False

    def write(self) -> None:
        """Write the progress file atomically."""
        body = {
            "count": self.count,
            "expected": self.expected,
            "done": self.done,
            "samples": self.samples,
            "peak_rss_mb": peak_rss_mb(os.getpid()),
        }
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(body))
        temporary.replace(self.path)
        self._written_at = time.monotonic()


def read_progress(path: Path) -> dict[str, Any] | None:
    """Return the last progress a scenario wrote, or None before its first write."""
    try:
        body: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return body


@dataclass(slots=True)
class Measured:
    """Throughput of one scenario, from its samples (the first one opens the window).

    ``records`` counts the records processed inside the window; ``total`` every record the
    scenario processed. CPU is the scenario's own processes' (not the broker's).
    """

    name: str
    samples: list[Sample]
    complete: bool
    peak_rss_mb: float | None = None
    broker_cpu_s: float | None = None

    @property
    def total(self) -> int:
        """Return every record processed."""
        return self.samples[-1][1] if self.samples else 0

    @property
    def records(self) -> int:
        """Return the records processed inside the window."""
        return self.total - self.samples[0][1] if self.samples else 0

    @property
    def wall_s(self) -> float:
        """Return the length of the window in seconds."""
        return self.samples[-1][0] - self.samples[0][0] if self.samples else 0.0

    @property
    def cpu_s(self) -> float:
        """Return the CPU seconds used inside the window."""
        return self.samples[-1][2] - self.samples[0][2] if self.samples else 0.0

    @property
    def events_per_s(self) -> float:
        """Return records per wall second over the measured window."""
        return self.records / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_s_per_million(self) -> float:
        """Return CPU seconds the scenario's process(es) used per million records."""
        return self.cpu_s * 1e6 / self.records if self.records else 0.0

    def events_per_s_upto(self, records: int) -> float | None:
        """Return the rate from the window's start until ``records`` had been processed.

        The end time is interpolated between the two samples around ``records``; None if
        the scenario never got that far.

        >>> samples = [(0.0, 0, 0.0), (1.0, 100, 1.0), (2.0, 300, 2.0)]
        >>> Measured("x", samples, True).events_per_s_upto(200)
        133.33333333333334
        """
        if not self.samples or records <= self.samples[0][1]:
            return None
        start_s, start_count, _ = self.samples[0]
        for (before_s, before, _), (after_s, after, _) in itertools.pairwise(self.samples):
            if after >= records:
                at_s = before_s + (after_s - before_s) * (records - before) / max(1, after - before)
                return (records - start_count) / (at_s - start_s) if at_s > start_s else None
        return None


def measured_from_progress(
    name: str, body: dict[str, Any], peak_mb: float | None, broker_cpu_s: float | None
) -> Measured:
    """Return the measurement a scenario's last progress file describes."""
    return Measured(
        name=name,
        samples=[(float(t), int(n), float(c)) for t, n, c in body["samples"]],
        complete=bool(body["done"]),
        peak_rss_mb=max(peak_mb or 0.0, float(body.get("peak_rss_mb", 0.0))),
        broker_cpu_s=broker_cpu_s,
    )
