"""A real Prometheus server scrapes a live churnstream Metrics endpoint on loopback.

Starts Debian's ``prometheus`` binary on 127.0.0.1 (free port, temporary data dir) with a
config that scrapes a small aiohttp server serving a :class:`~streams.metrics.Metrics`
registry and loads deploy/prometheus/rules.yml, then asks Prometheus's HTTP API whether the
``churnstream_`` series arrived, whether the rules load and evaluate, and whether every
dashboard query runs. No Kafka needed. A missing binary fails the test (``make setup``
installs it).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streams.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "churnstream.json"
START_TIMEOUT_S = 60.0
SCRAPE_TIMEOUT_S = 60.0
POLL_S = 0.2


def prometheus_binary() -> str:
    """Return the prometheus server path, or fail with what to do."""
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail(
            "the prometheus server binary is not on PATH: run `make setup`, which installs "
            "Debian's `prometheus` package (apt-get install -y --no-install-recommends prometheus)"
        )
    return path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def populated_metrics() -> Metrics:
    """Return Metrics holding what a worker reports after a little traffic."""
    metrics = Metrics.create(CollectorRegistry(), health_window=50)
    metrics.declare_topics(["t-orders", "t-clickstream", "t-customer-profiles"])
    for _ in range(3):
        metrics.event_consumed("t-orders")
    metrics.observe_score("HIGH", event_to_score_s=0.03)
    metrics.observe_risk_change(None, "HIGH", 0.002)
    metrics.dead_letter("truncated")
    metrics.intervention("live_chat", "chat", holdout=False)
    metrics.webhook_delivery("delivered")
    metrics.model_in_use("m-000500", 500)
    for prediction, label in [(0.9, 1), (0.2, 0), (0.7, 1), (0.4, 0)]:
        metrics.label_learned(label, prediction)
    metrics.set_consumer_lag({("t-orders", 0): 12})
    metrics.set_table_entries("customers", 1000)
    metrics.readiness(lambda: True)
    return metrics


@asynccontextmanager
async def metrics_endpoint(metrics: Metrics) -> AsyncIterator[int]:
    """Serve ``metrics`` at http://127.0.0.1:<port>/metrics; yield the port."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))  # bound here, so the port is known without a race
    site = web.SockSite(runner, listener)
    await site.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        await runner.cleanup()
        listener.close()


@asynccontextmanager
async def prometheus_server(tmp_path: Path, target_port: int) -> AsyncIterator[str]:
    """Run a Prometheus scraping 127.0.0.1:``target_port`` every second; yield its base URL."""
    binary = prometheus_binary()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML: no YAML library needed to write the config
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "churnstream",
                        "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                    }
                ],
            }
        )
    )
    log_path = tmp_path / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def wait_for(
    what: str, check: Callable[[], Awaitable[Any]], timeout_s: float, log: Path
) -> Any:
    """Return ``check()``'s first truthy result; fail naming ``what`` (with the server log)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            result = await check()
        except aiohttp.ClientError:
            result = None
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            tail = log.read_text()[-3000:] if log.exists() else "(no log)"
            pytest.fail(
                f"timed out after {timeout_s} s waiting for {what}; prometheus log:\n{tail}"
            )
        await asyncio.sleep(POLL_S)  # polling interval of a condition, not a synchronisation


async def query(session: aiohttp.ClientSession, base: str, promql: str) -> list[dict[str, Any]]:
    """Return the result vector of an instant query (raises if Prometheus reports an error)."""
    async with session.get(f"{base}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    assert body["status"] == "success", f"{promql!r}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def dashboard_queries() -> list[str]:
    """Return every dashboard query with Grafana's variables made concrete."""
    dashboard = json.loads(DASHBOARD.read_text())
    replacements = {"$__rate_interval": "1m", "$__range": "1h", "$instance": ".*"}
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in replacements.items():
                expr = expr.replace(variable, value)
            queries.append(expr)
    return queries


def test_prometheus_scrapes_the_churnstream_series(tmp_path: Path) -> None:
    metrics = populated_metrics()
    log = tmp_path / "prometheus.log"

    async def scenario() -> None:
        async with (
            metrics_endpoint(metrics) as target_port,
            prometheus_server(tmp_path, target_port) as base,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        ):

            async def ready() -> bool:
                async with session.get(f"{base}/-/ready") as response:
                    return response.status == 200

            await wait_for("Prometheus to be ready", ready, START_TIMEOUT_S, log)

            async def consumed() -> list[dict[str, Any]]:
                return await query(
                    session, base, 'churnstream_events_consumed_total{topic="t-orders"}'
                )

            (sample,) = await wait_for("the first scrape", consumed, SCRAPE_TIMEOUT_S, log)
            assert float(sample["value"][1]) == 3.0
            assert sample["metric"]["job"] == "churnstream"

            async def up() -> list[dict[str, Any]]:
                return await query(session, base, 'up{job="churnstream"} == 1')

            assert await wait_for("the target to be up", up, SCRAPE_TIMEOUT_S, log)
            expected = {
                "churnstream_model_auc": 1.0,
                "churnstream_model_health_pairs": 4.0,
                "churnstream_event_to_score_seconds_count": 1.0,
                'churnstream_risk_changes_total{from_band="NONE", to_band="HIGH"}': 1.0,
                'churnstream_consumer_lag_messages{topic="t-orders", partition="0"}': 12.0,
                'churnstream_model_info{version="m-000500"}': 1.0,
                'churnstream_table_entries{table="customers"}': 1000.0,
                "churnstream_worker_ready": 1.0,
                'churnstream_events_consumed_total{topic="t-clickstream"}': 0.0,
            }
            for promql, value in expected.items():
                (series,) = await query(session, base, promql)
                assert float(series["value"][1]) == pytest.approx(value), promql

            every = await query(session, base, '{__name__=~"churnstream_.+"}')
            assert len({series["metric"]["__name__"] for series in every}) >= 20
            label_names = {name for series in every for name in series["metric"]}
            assert not any("customer" in name for name in label_names)

            async def rules_evaluated() -> list[dict[str, Any]]:
                async with session.get(f"{base}/api/v1/rules") as response:
                    groups = (await response.json())["data"]["groups"]
                rules = [rule for group in groups for rule in group["rules"]]
                done = all(rule["lastEvaluation"] != "0001-01-01T00:00:00Z" for rule in rules)
                return rules if rules and done else []

            rules = await wait_for("the alert rules to evaluate", rules_evaluated, 30.0, log)
            assert len(rules) == 9
            assert all(rule["health"] == "ok" for rule in rules), rules

            for promql in dashboard_queries():
                await query(session, base, promql)  # evaluates without an error

    asyncio.run(scenario())


def test_prometheus_scrapes_a_live_worker(
    tmp_path: Path,
    topic_settings: Callable[..., Any],
    start_worker: Callable[..., Any],
) -> None:
    from streams.io.kafka_clients import produce_events
    from streams.sim.sample import sample_events

    settings = topic_settings(partitions=2)
    produce_events(settings, sample_events(customers=20, days=60, seed=2))
    worker = start_worker(settings, CHURNSTREAM_TRAIN="false")
    log = tmp_path / "prometheus.log"
    orders = settings.topic("orders")

    async def scenario() -> None:
        async with (
            prometheus_server(tmp_path, worker.web_port) as base,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        ):

            async def consumed() -> list[dict[str, Any]]:
                found = await query(
                    session, base, f'churnstream_events_consumed_total{{topic="{orders}"}} > 0'
                )
                return found

            (sample,) = await wait_for("the worker's consumed orders", consumed, 90.0, log)
            assert float(sample["value"][1]) > 0

            async def scored() -> list[dict[str, Any]]:
                return await query(session, base, "sum(churnstream_risk_changes_total) > 0")

            assert await wait_for("risk changes counted", scored, 60.0, log)
            (info,) = await query(session, base, "churnstream_model_info")
            assert info["metric"]["version"] == "prior-0"
            (ready,) = await query(session, base, "churnstream_worker_ready")
            assert float(ready["value"][1]) == 1.0
            every = await query(session, base, '{__name__=~"churnstream_.+"}')
            label_names = {name for series in every for name in series["metric"]}
            assert not any("customer" in name for name in label_names)
            values = {value for series in every for value in series["metric"].values()}
            assert not any(value.startswith("sample-") for value in values)

    asyncio.run(scenario())
