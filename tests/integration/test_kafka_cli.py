"""The CLI against the project's real local broker: up/down/status, topics, produce and tail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.core.events import ClickEvent, OrderEvent, OrderItem, ProfileEvent, event_to_dict
from streams.io import kafka_local

NOW = datetime.now(UTC).replace(microsecond=0)


def churnstream(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _events_file(path: Path) -> list[dict[str, object]]:
    events = [
        ProfileEvent(customer_id="c1", event_time=NOW, email_opt_in=True, preferred_channel="chat"),
        ClickEvent(
            event_id="k1",
            customer_id="c1",
            session_id="s1",
            event_time=NOW,
            action="product_view",
            product_id="p9",
            category="music",
            brand="acme",
            price=9.5,
        ),
        OrderEvent(
            event_id="o1",
            customer_id="c2",
            order_id="o1",
            event_time=NOW,
            amount=19.0,
            currency="EUR",
            status="payment_failed",
            item_count=2,
            items=(OrderItem(sku="p9", qty=2, price=9.5, category="music", brand="acme"),),
        ),
    ]
    rows = [event_to_dict(event) for event in events]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def test_produce_then_tail_round_trips_every_event_type(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    rows = _events_file(tmp_path / "events.jsonl")
    created = churnstream("topics", "create", "--partitions", "2", env=cli_env)
    assert created.returncode == 0, created.stderr
    produced = churnstream("produce", "--events", str(tmp_path / "events.jsonl"), env=cli_env)
    assert produced.returncode == 0, produced.stderr
    assert "produced 3 events" in produced.stdout

    seen: dict[str, dict[str, object]] = {}
    for topic in ("customer-profiles", "clickstream", "orders"):
        tailed = churnstream(
            "tail",
            "--topic",
            topic,
            "--from-beginning",
            "--max-records",
            "1",
            "--timeout-s",
            "20",
            env=cli_env,
        )
        assert tailed.returncode == 0, tailed.stderr
        [line] = tailed.stdout.splitlines()
        record = json.loads(line)
        seen[topic] = record
    assert seen["orders"]["key"] == "c2"
    order = seen["orders"]["value"]
    assert isinstance(order, dict)
    assert order["status"] == "payment_failed"
    assert order["items"][0]["sku"] == "p9"
    assert order["amount"] == rows[2]["amount"]
    click = seen["clickstream"]["value"]
    assert isinstance(click, dict)
    assert click["action"] == "product_view"
    assert click["event_time"] == rows[1]["event_time"]
    profile = seen["customer-profiles"]["value"]
    assert isinstance(profile, dict)
    assert profile["preferred_channel"] == "chat"
    assert profile["email_opt_in"] is True


def test_topics_create_is_idempotent(cli_env: dict[str, str]) -> None:
    first = churnstream("topics", "create", env=cli_env)
    second = churnstream("topics", "create", env=cli_env)
    assert first.returncode == 0, first.stderr
    assert "created 9 topic(s)" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "all existed already" in second.stdout


def test_produce_rejects_a_bad_line_naming_it(tmp_path: Path, cli_env: dict[str, str]) -> None:
    path = tmp_path / "bad.jsonl"
    _events_file(path)
    with path.open("a") as handle:
        handle.write('{"event_type": "order", "event_id": "x"}\n')
    produced = churnstream("produce", "--events", str(path), env=cli_env)
    assert produced.returncode == 1
    assert f"{path}:4:" in produced.stderr
    assert len(produced.stderr.strip().splitlines()) == 1


def test_kafka_up_twice_is_idempotent(
    kafka_broker: kafka_local.BrokerInfo, cli_env: dict[str, str]
) -> None:
    again = churnstream("kafka", "up", "--data-dir", kafka_broker.data_dir, env=cli_env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == kafka_broker.bootstrap
    status = churnstream("kafka", "status", "--data-dir", kafka_broker.data_dir, env=cli_env)
    assert status.returncode == 0
    assert f"pid={kafka_broker.pid}" in status.stdout


def _broker_pids_for(data_dir: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"kafka.Kafka" in cmdline and str(data_dir).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def test_down_leaves_no_broker_process(
    tmp_path: Path, cli_env: dict[str, str], kafka_broker: kafka_local.BrokerInfo
) -> None:
    data_dir = tmp_path / "second-broker"
    try:
        up = churnstream("kafka", "up", "--data-dir", str(data_dir), env=cli_env)
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip().startswith("127.0.0.1:")
        assert _broker_pids_for(data_dir)
        down = churnstream("kafka", "down", "--data-dir", str(data_dir), env=cli_env)
        assert down.returncode == 0, down.stderr
        assert _broker_pids_for(data_dir) == []
        status = churnstream("kafka", "status", "--data-dir", str(data_dir), env=cli_env)
        assert status.returncode == 3
        assert "stopped" in status.stdout
    finally:
        kafka_local.broker_down(data_dir)


def test_tail_rejects_an_unknown_topic(cli_env: dict[str, str]) -> None:
    tailed = churnstream("tail", "--topic", "nope", env=cli_env)
    assert tailed.returncode == 1
    assert "unknown topic 'nope'" in tailed.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("tail", "--topic", "orders", "--max-records", "0"), "--max-records"),
        (("kafka", "up", "--port", "70000"), "--port"),
        (
            (
                "replay",
                "--events",
                "/nonexistent.jsonl",
                "--as-of",
                "2024-01-01T00:00:00Z",
                "--out",
                "x.csv",
            ),
            "--events",
        ),
    ],
)
def test_bad_flags_exit_nonzero_naming_the_flag(args: tuple[str, ...], needle: str) -> None:
    done = churnstream(*args, env=dict(os.environ))
    assert done.returncode == 2
    assert needle in done.stderr
