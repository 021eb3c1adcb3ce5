"""`churnstream demo` end to end: it shows risk changes and leaves no process behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.processes import wait_for


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(proc.name))
    return found


def test_demo_shows_risk_changes_and_stops_everything_it_started(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNSTREAM_")}
    env["CHURNSTREAM_DATA_DIR"] = str(tmp_path / "state")
    env["DEMO_SECONDS"] = "60"
    done = subprocess.run(
        [sys.executable, "-m", "streams", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "broker ready at 127.0.0.1:" in out
    assert "worker ready: http://127.0.0.1:" in out
    risk_lines = [line for line in out.splitlines() if line.startswith("[") and " risk " in line]
    assert len(risk_lines) >= 10, out[-2000:]
    actions = [line for line in out.splitlines() if line.startswith("[") and " action " in line]
    assert actions, out[-2000:]
    assert "ERROR" not in done.stderr
    assert "worker stopped" in out
    assert "broker stopped" in out
    wait_for(lambda: not _processes_mentioning(str(tmp_path)), 30, "demo processes to exit")
