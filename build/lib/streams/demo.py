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
from pathlib import Path
from typing import Any

from streams.errors import ChurnstreamError
from streams.io import kafka_local
from streams.io.avro import default_codec
from streams.io.kafka_clients import client_config, create_topics
from streams.settings import Settings
from streams.sim.runner import SimSummary, run_live
from streams.sim.shop import SimConfig

# A shop big enough to show churn, small enough for a laptop; one simulated day passes in
# about 1.3 wall seconds, so within a minute customers go quiet and risk rises.
DEMO_SHOP = SimConfig(customers=6000, days=None, acquisition_days=30.0)
DEMO_RATE = 3000.0
DEMO_SPEED = 0.75


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


def risk_change_line(value: dict[str, Any]) -> str:
    """Return one compact terminal line for a decoded risk-change record."""
    reasons = value.get("reasons") or []
    top = reasons[0]["text"] if reasons else "-"
    when = str(value.get("as_of", ""))[:10]
    change = f"{value.get('from_band') or 'new'} -> {value.get('to_band')}"
    return (
        f"{when}  risk   {value.get('customer_id', '?'):<10} {change:<20} "
        f"p={value.get('score', 0):.2f}  {top}  [{value.get('model_version')}]"
    )


def intervention_line(value: dict[str, Any]) -> str:
    """Return one compact terminal line for a decoded intervention record."""
    when = str(value.get("created_at", ""))[:10]
    action = f"{value.get('kind')} via {value.get('channel') or '-'}"
    held = value.get("suppressed_reason")
    outcome = f"({held})" if held else "sent"
    offer = value.get("offer") or {}
    detail = ""
    if offer.get("discount_percent"):
        detail = f" {offer['discount_percent']:.0f}% off"
    elif offer.get("amount_off"):
        detail = f" {offer['amount_off']:.2f} {offer.get('currency') or ''} off"
    return (
        f"{when}  action {value.get('customer_id', '?'):<10} {value.get('segment', '?'):<20} "
        f"{action}{detail} {outcome}"
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
    stop = threading.Event()
    shop: threading.Thread | None = None
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
        print(f"worker ready: {base}/metrics  {base}/readyz  {base}/v1/alerts/stream", flush=True)
        print(f"score API:    {base}/v1/customers/<customer id>/score", flush=True)
        progress: list[SimSummary] = []

        def simulate() -> None:
            run_live(
                live,
                DEMO_SHOP,
                rate=DEMO_RATE,
                speed=DEMO_SPEED,
                duration_s=None,
                truth_path=run_dir / "truth.jsonl",
                stop=stop,
                on_progress=progress.append,
                follow_group=f"{prefix}churnstream",
            )

        print(
            f"simulating a shop of {DEMO_SHOP.customers} customers (truth: {run_dir})", flush=True
        )
        shop = threading.Thread(target=simulate, name="shop", daemon=True)
        shop.start()
        _show_alerts(live, deadline, progress)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        stop.set()
        with contextlib.suppress(KeyboardInterrupt):
            if shop is not None:
                shop.join(timeout=30)
            if worker is not None:
                worker.stop()
                print("worker stopped", flush=True)
            if not was_running:
                kafka_local.broker_down(kafka_dir)
                print("broker stopped", flush=True)
    return 0


def _show_alerts(live: Settings, deadline: float | None, progress: list[SimSummary]) -> None:
    """Print risk changes and interventions as they arrive, and a status line every 5 s."""
    from kafka import KafkaConsumer, TopicPartition

    codec = default_codec()
    consumer = KafkaConsumer(**client_config(live), enable_auto_commit=False)
    try:
        topics = {live.topic("risk-changes"): "risk", live.topic("interventions"): "action"}
        assigned = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        counts = {"risk": 0, "action": 0}
        last_status = time.monotonic()
        while deadline is None or time.monotonic() < deadline:
            for partition, records in consumer.poll(timeout_ms=250).items():
                kind = topics[partition.topic]
                for record in records:
                    counts[kind] += 1
                    _, value = codec.decode(record.value)
                    shown = counts[kind] <= 25 or counts[kind] % 100 == 0
                    if shown:
                        line = (
                            risk_change_line(value) if kind == "risk" else intervention_line(value)
                        )
                        print(f"[{counts[kind]:>5}] {line}", flush=True)
            if time.monotonic() - last_status >= 5:
                last_status = time.monotonic()
                shop = progress[-1].line().split(";")[0] if progress else "shop starting"
                print(
                    f"--- {shop}; risk changes {counts['risk']}, interventions {counts['action']}",
                    flush=True,
                )
        print(f"--- {counts['risk']} risk changes, {counts['action']} interventions", flush=True)
    finally:
        consumer.close()
