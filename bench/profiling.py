"""py-spy on the worker during (d): raw stacks to a file, and the functions where time goes."""

from __future__ import annotations

import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchkit import Child, Children


def py_spy() -> str | None:
    """Return the py-spy executable (the venv's, else on PATH), or None."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _function(frame: str) -> str:
    """Return ``frame`` (``name (file:line)``) without its line number."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/streams/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/streams/":
                path = "streams/" + path
            break
    return f"{name} ({path})"


def summarize(raw: str, top: int = 20, root_share: float = 60.0) -> dict[str, Any]:
    """Return the top functions by own and by inclusive samples (percent of all), per thread.

    ``raw`` is py-spy's ``--format raw --threads`` output: ``thread (tid): name;frame;...;leaf
    COUNT`` per line. Inclusive shares at or above ``root_share`` (the event loop's own
    frames, ``main``, ...) are left out: every sample passes through them.

    >>> lines = ["thread (1): Main;main (a.py:1);f (a.py:3) 3", "thread (1): Main;main (a.py:1) 1"]
    >>> summary = summarize(chr(10).join(lines))
    >>> summary["self"][0], summary["threads"]
    (['f (a.py)', 75.0], [['Main', 100.0]])
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[0].startswith("thread ("):
            threads[frames.pop(0).partition(": ")[2] or "?"] += count
        if not frames:
            continue
        functions = [_function(frame) for frame in frames]
        total += count
        own[functions[-1]] += count
        for function in set(functions):
            inclusive[function] += count

    def share(counter: Counter[str], limit: float = 101.0) -> list[list[Any]]:
        shares = [(name, round(100.0 * n / total, 1)) for name, n in counter.most_common()]
        return [[name, pct] for name, pct in shares if pct < limit][:top]

    all_samples = sum(threads.values()) or total
    return {
        "samples": total,
        "threads": [
            [name, round(100.0 * n / all_samples, 1)] for name, n in threads.most_common(top)
        ],
        "self": share(own),
        "inclusive": share(inclusive, root_share),
    }


class Profiler:
    """Samples one process with py-spy for a fixed duration, once."""

    def __init__(self, children: Children, out_dir: Path, work_dir: Path) -> None:
        self.children = children
        self.raw_path = out_dir / "profile-full-worker.txt"
        self.log_path = work_dir / "py-spy.log"
        self.child: Child | None = None
        self.until = 0.0
        self.error: str | None = None

    def start_once(self, pid: int, duration_s: float) -> None:
        """Start sampling ``pid`` for ``duration_s`` unless already started."""
        if self.child is not None or self.error is not None:
            return
        executable = py_spy()
        if executable is None:
            self.error = "py-spy is not installed"
            return
        argv = [executable, "record", "--pid", str(pid), "--rate", "50", "--nonblocking"]
        argv += ["--duration", str(int(duration_s)), "--format", "raw", "--threads"]
        argv += ["--output", str(self.raw_path)]
        self.child = self.children.start("py-spy", argv, self.log_path)
        self.until = time.monotonic() + duration_s

    def finish(self, log: Callable[[str], None]) -> dict[str, Any]:
        """Wait for the recording to end; return its summary (also written beside the raw)."""
        if self.child is None:
            return {"error": self.error or "the worker scored nothing to profile"}
        assert self.child.process is not None
        try:
            self.child.process.wait(timeout=max(0.0, self.until - time.monotonic()) + 15)
        except Exception:  # a wedged py-spy must not stop the run
            self.child.stop()
        if not self.raw_path.exists():
            return {"error": f"py-spy wrote nothing: {self.child.log_tail(3)}"}
        summary = summarize(self.raw_path.read_text(errors="replace"))
        lines = [f"py-spy, {summary['samples']} samples; by thread:"]
        lines += [f"  {pct:5.1f}%  {name}" for name, pct in summary["threads"]]
        lines += ["own time:"]
        lines += [f"  {pct:5.1f}%  {name}" for name, pct in summary["self"]]
        lines += ["inclusive time (frames in every sample left out):"]
        lines += [f"  {pct:5.1f}%  {name}" for name, pct in summary["inclusive"]]
        (self.raw_path.parent / "profile-full-worker-summary.txt").write_text("\n".join(lines))
        log("profile: " + "; ".join(f"{name} {pct}%" for name, pct in summary["self"][:5]))
        summary["raw"] = str(self.raw_path)
        return summary
