"""``churnstream demo``: a local broker, the topics, a worker, events flowing, risk changes live."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streams.core.events import Event
from streams.errors import ChurnstreamError
from streams.io import kafka_local
from streams.io.events_file import read_events
from streams.io.kafka_clients import create_topics, iter_topic, produce_events
from streams.settings import Settings
from streams.sim.sample import sample_events

SHARED_SAMPLE = kafka_local.REPO_ROOT.parent / "shared" / "data" / "cdnow_sample_orders.jsonl.gz"


def demo_events() -> tuple[str, Iterator[Event]]:
    """Return a description and the events the demo publishes (real CDNOW data if present)."""
    if SHARED_SAMPLE.is_file():
        return f"real CDNOW orders from {SHARED_SAMPLE}", read_events(SHARED_SAMPLE)
    return "the built-in sample shop", sample_events()


def model_secret(settings: Settings, state_dir: Path) -> str:
    """Return the configured model secret, or one kept (0600) in ``state_dir`` for demos."""
    if settings.model_secret:
        return settings.model_secret
    path = state_dir / "model-secret"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(24))
        path.chmod(0o600)
    return path.read_text().strip()


def risk_change_line(record: dict[str, Any]) -> str:
    """Return one compact terminal line for a decoded risk-change record."""
    value = record.get("value")
    if not isinstance(value, dict):
        return f"{record.get('key')}: (undecodable) {record.get('error', '')}"
    reasons = value.get("reasons") or []
    top = reasons[0]["text"] if reasons else "-"
    when = str(value.get("as_of", ""))[:10]
    change = f"{value.get('from_band') or 'new'} -> {value.get('to_band')}"
    return (
        f"{when}  {value.get('customer_id', '?'):<12} {change:<20} "
        f"p={value.get('score', 0):.2f}  {top}  [{value.get('model_version')}]"
    )


class _WorkerProcess:
    """The worker the demo runs as a child process, its log in the demo's state dir."""

    def __init__(self, env: dict[str, str], log_path: Path, web_port: int) -> None:
        self.web_port = web_port
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops it in order
            )
        self.log_path = log_path

    def ready(self) -> bool:
        if self.process.poll() is not None:
            msg = f"the worker exited with {self.process.returncode}; see {self.log_path}"
            raise ChurnstreamError(msg)
        try:
            url = f"http://127.0.0.1:{self.web_port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _free_web_port(preferred: int) -> int:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return kafka_local.free_port()


def run_demo(settings: Settings, seconds: float | None = None, data_dir: Path | None = None) -> int:
    """Run the demo until ``seconds`` pass or Ctrl-C; stop everything it started; return 0."""
    started = time.monotonic()
    deadline = None if seconds is None else started + seconds
    state_dir = data_dir or settings.data_dir
    kafka_dir = state_dir / "kafka"
    was_running, _ = kafka_local.broker_status(kafka_dir)
    print(f"starting the local Apache Kafka broker in {kafka_dir} ...", flush=True)
    info = kafka_local.broker_up(kafka_dir)
    print(f"broker ready at {info.bootstrap} after {time.monotonic() - started:.1f}s", flush=True)
    worker: _WorkerProcess | None = None
    try:
        # A fresh topic prefix per run: re-running the demo never doubles its input.
        prefix = f"{settings.topic_prefix}demo{int(time.time())}-"
        live = Settings.load({}, {"broker": info.bootstrap, "topic_prefix": prefix})
        create_topics(live)
        run_dir = state_dir / "demo" / prefix.rstrip("-")
        run_dir.mkdir(parents=True, exist_ok=True)
        web_port = _free_web_port(settings.web_port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNSTREAM_")}
        env.update(
            {
                "CHURNSTREAM_BROKER": info.bootstrap,
                "CHURNSTREAM_TOPIC_PREFIX": prefix,
                "CHURNSTREAM_DATA_DIR": str(run_dir),
                "CHURNSTREAM_WEB_PORT": str(web_port),
                "CHURNSTREAM_MODEL_SECRET": model_secret(settings, state_dir),
                "CHURNSTREAM_SNAPSHOT_EVERY": "200",
            }
        )
        print(f"starting a worker (log: {run_dir / 'worker.log'}) ...", flush=True)
        worker = _WorkerProcess(env, run_dir / "worker.log", web_port)
        while not worker.ready():
            if deadline is not None and time.monotonic() >= deadline:
                return 0
            time.sleep(0.25)
        base = f"http://127.0.0.1:{web_port}"
        print(f"worker ready: {base}/healthz  {base}/readyz  {base}/metrics", flush=True)
        description, events = demo_events()
        print(f"publishing {description} ...", flush=True)
        counts: dict[str, int] = {}
        producer = threading.Thread(
            target=lambda: counts.update(produce_events(live, events)), daemon=True
        )
        producer.start()
        _show_risk_changes(live, deadline, counts)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            if worker is not None:
                worker.stop()
                print("worker stopped", flush=True)
            if not was_running:
                kafka_local.broker_down(kafka_dir)
                print("broker stopped", flush=True)
    return 0


def _show_risk_changes(live: Settings, deadline: float | None, counts: dict[str, int]) -> None:
    shown = 0
    last_status = time.monotonic()
    quiet_s = 3600.0 if deadline is None else max(deadline - time.monotonic(), 1.0)
    for record in iter_topic(live, "risk-changes", from_beginning=True, timeout_s=quiet_s):
        shown += 1
        if shown <= 40 or shown % 250 == 0:
            print(f"[{shown:>6}] {risk_change_line(record)}", flush=True)
        now = time.monotonic()
        if now - last_status >= 5:
            last_status = now
            produced = sum(counts.values()) if counts else "publishing"
            print(f"--- risk changes: {shown}  events produced: {produced}", flush=True)
        if deadline is not None and now >= deadline:
            break
    print(f"--- {shown} risk changes shown", flush=True)
