"""A failed payment on the real broker becomes a payment-recovery intervention on the topic,
a signed webhook, and an SSE event."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from streams.core.events import OrderEvent, ProfileEvent
from streams.io.kafka_clients import produce_events
from streams.io.kafka_local import free_port
from streams.settings import Settings
from tests.support.processes import TopicWatcher, WorkerProcess, wait_for
from tests.support.scenarios import START

SECRET_KEY = secrets.token_bytes(32)
WEBHOOK_SECRET = "whsec_" + base64.b64encode(SECRET_KEY).decode()


class LoopThread:
    """An asyncio loop in a thread, running the test's webhook receiver and SSE client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.stop()


def _verify(headers: dict[str, str], body: bytes) -> bool:
    """Check a Standard Webhooks signature independently of the project's code."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(SECRET_KEY, signed, hashlib.sha256).digest()).decode()
    offered = [part.split(",", 1)[1] for part in headers["webhook-signature"].split()]
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


def test_a_failed_payment_reaches_the_topic_the_webhook_and_the_alert_stream(
    topic_settings: Callable[..., Settings],
    start_worker: Callable[..., WorkerProcess],
    loop_thread: LoopThread,
) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        return web.Response(status=204)

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", hook_port).start()
        return runner

    hook_port = free_port()
    receiver = loop_thread.run(serve())
    settings = topic_settings(partitions=1)
    worker = start_worker(
        settings,
        CHURNSTREAM_TRAIN="false",
        CHURNSTREAM_HOLDOUT_PERCENT="0",
        CHURNSTREAM_WEBHOOK_URLS=f"http://127.0.0.1:{hook_port}/hook",
        CHURNSTREAM_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    sse_lines: list[str] = []

    async def read_alerts() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{worker.url}/v1/alerts/stream?kind=intervention") as response,
        ):
            async for raw in response.content:
                sse_lines.append(raw.decode().rstrip("\n"))

    reader = loop_thread.spawn(read_alerts())
    try:
        wait_for(lambda: any(line.startswith("retry:") for line in sse_lines), 30, "SSE open")
        at = START.replace(hour=12)
        produce_events(
            settings,
            [
                ProfileEvent(customer_id="payer", event_time=at, email_opt_in=True),
                OrderEvent("payer-o1", "payer", "o1", at, 45.0, "EUR", "paid", 1),
                OrderEvent(
                    "payer-o2-failed",
                    "payer",
                    "o2",
                    at + timedelta(days=20),
                    60.0,
                    "EUR",
                    "payment_failed",
                    2,
                ),
            ],
        )
        topic = TopicWatcher(settings, "interventions")
        try:
            [decision] = topic.wait_until(
                lambda values: [v for v in values if v["segment"] == "payment_recovery"],
                timeout_s=60,
                what="a payment-recovery intervention on the topic",
            )
        finally:
            topic.close()
        assert decision["customer_id"] == "payer"
        assert decision["kind"] == "message"
        assert decision["channel"] == "email"
        assert decision["suppressed_reason"] is None
        assert decision["holdout"] is False

        def delivered() -> list[tuple[dict[str, str], bytes]]:
            return [r for r in received if r[0]["webhook-id"] == decision["intervention_id"]]

        [(_, body)] = wait_for(delivered, 30, "the intervention's webhook delivery")
        assert all(_verify(h, b) for h, b in received)
        event = json.loads(body)
        assert event["specversion"] == "1.0"
        assert event["type"] == "io.churnstream.intervention"
        assert event["id"] == decision["intervention_id"]
        assert event["data"]["segment"] == "payment_recovery"

        wait_for(
            lambda: any(decision["intervention_id"] in line for line in sse_lines),
            30,
            "the intervention on the alert stream",
        )
    finally:
        reader.cancel()
        loop_thread.run(receiver.cleanup())
