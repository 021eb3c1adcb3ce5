"""Webhooks against local endpoints: signatures checked independently, retries, isolation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from aiohttp import web

from streams.errors import SettingsError
from streams.worker.webhooks import DeadLetter, WebhookSender, decode_secret, sign

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
TIMEOUT_S = 5.0
PAYLOAD = {"intervention_id": "i-1", "customer_id": "c1", "kind": "chat"}


@dataclass
class Endpoint:
    """A local receiver that answers with the statuses it is given, then 200."""

    statuses: list[int] = field(default_factory=list)
    hold: asyncio.Event | None = None
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self.arrived:
            self.requests.append((dict(request.headers), body))
            self.arrived.notify_all()
        if self.hold is not None:
            await self.hold.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)

    async def wait_for(self, count: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: len(self.requests) >= count), TIMEOUT_S
            )


@asynccontextmanager
async def serve(**endpoints: Endpoint) -> AsyncIterator[dict[str, str]]:
    """Serve each endpoint at ``/<name>`` on 127.0.0.1; yield name -> URL."""
    app = web.Application()
    for name, endpoint in endpoints.items():
        app.router.add_post(f"/{name}", endpoint.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield {name: f"http://{host}:{port}/{name}" for name in endpoints}
    finally:
        for endpoint in endpoints.values():
            if endpoint.hold is not None:
                endpoint.hold.set()
        await runner.cleanup()


def fast_sender(urls: list[str], **kwargs: object) -> WebhookSender:
    options: dict[str, object] = {
        "max_attempts": 4,
        "backoff_base_s": 0.001,
        "backoff_max_s": 0.01,
        "rng": random.Random(1),
        **kwargs,
    }
    return WebhookSender(urls, SECRET, **options)  # type: ignore[arg-type]  # typed options


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 15))


def verify(headers: dict[str, str], body: bytes, secret: str, tolerance_s: float = 300) -> str:
    """Verify a Standard Webhooks request without the project's code; return its id."""
    key = base64.b64decode(secret[len("whsec_") :])
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    assert abs(time.time() - int(timestamp)) <= tolerance_s, "stale timestamp"
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [part.split(",", 1)[1] for part in headers["webhook-signature"].split(" ")]
    assert any(hmac.compare_digest(expected, candidate) for candidate in offered), "bad signature"
    return msg_id


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_delivery_is_a_signed_structured_cloud_event() -> None:
    async def scenario() -> None:
        receiver = Endpoint()
        async with serve(hook=receiver) as urls:
            sender = fast_sender([urls["hook"]], source="/churnstream/test")
            await sender.start()
            when = datetime(2024, 1, 1, 9, tzinfo=UTC)
            sender.submit("intervention", PAYLOAD, "i-1", event_time=when, subject="c1")
            await receiver.wait_for(1)
            await sender.stop()
        headers, body = receiver.requests[0]
        assert verify(headers, body, SECRET) == "i-1"
        assert headers["Content-Type"].startswith("application/cloudevents+json")
        event = json.loads(body)
        assert event == {
            "specversion": "1.0",
            "id": "i-1",
            "source": "/churnstream/test",
            "type": "io.churnstream.intervention",
            "datacontenttype": "application/json",
            "time": "2024-01-01T09:00:00Z",
            "subject": "c1",
            "data": PAYLOAD,
        }
        with pytest.raises(AssertionError, match="bad signature"):
            verify(headers, body + b" ", SECRET)

    run(scenario)


def test_an_endpoint_down_twice_gets_exactly_one_delivery_with_one_id() -> None:
    async def scenario() -> None:
        receiver = Endpoint(statuses=[503, 503])
        outcomes: list[str] = []
        delivered = asyncio.Event()
        letters: list[DeadLetter] = []

        def on_outcome(outcome: str) -> None:
            outcomes.append(outcome)
            if outcome == "delivered":
                delivered.set()

        ticks = iter(range(1_700_000_000, 1_700_000_100, 7))
        async with serve(hook=receiver) as urls:
            sender = fast_sender(
                [urls["hook"]],
                on_outcome=on_outcome,
                dead_letter=letters.append,
                clock=lambda: float(next(ticks)),
            )
            await sender.start()
            sender.submit("risk_change", {"event_id": "rc-9"}, "rc-9")
            await asyncio.wait_for(delivered.wait(), TIMEOUT_S)
            await sender.stop()
        assert outcomes == ["retry", "retry", "delivered"]
        assert (sender.stats.delivered, sender.stats.retried, sender.stats.failed) == (1, 2, 0)
        assert letters == []
        ids = {headers["webhook-id"] for headers, _ in receiver.requests}
        stamps = [headers["webhook-timestamp"] for headers, _ in receiver.requests]
        assert ids == {"rc-9"}
        assert len(receiver.requests) == 3
        assert len(set(stamps)) == 3  # each attempt is signed anew...
        for headers, body in receiver.requests:  # ...and every signature verifies
            assert verify(headers, body, SECRET, tolerance_s=float("inf")) == "rc-9"

    run(scenario)


def test_after_the_last_try_the_message_is_dead_lettered() -> None:
    async def scenario() -> None:
        with socket.socket() as probe:  # a port nobody listens on: connection refused
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        letters: list[DeadLetter] = []
        got_letter = asyncio.Event()

        async def dead_letter(letter: DeadLetter) -> None:
            letters.append(letter)
            got_letter.set()

        down = f"http://user:pw@127.0.0.1:{closed_port}/hook?token=secret"
        sender = fast_sender([down], max_attempts=3, dead_letter=dead_letter)
        await sender.start()
        sender.submit("intervention", PAYLOAD, "i-1")
        await asyncio.wait_for(got_letter.wait(), TIMEOUT_S)
        await sender.stop()
        (letter,) = letters
        assert (letter.attempts, letter.reason, letter.message.msg_id) == (
            3,
            "webhook_failed",
            "i-1",
        )
        assert "Connect" in letter.detail
        headers = dict(letter.headers())
        assert headers["churnstream.webhook.url"] == f"http://127.0.0.1:{closed_port}/hook".encode()
        assert headers["churnstream.errors.reason"] == b"webhook_failed"
        assert (sender.stats.retried, sender.stats.failed) == (2, 1)

    run(scenario)


def test_a_rejected_message_is_not_retried() -> None:
    async def scenario() -> None:
        receiver = Endpoint(statuses=[400])
        letters: list[DeadLetter] = []
        failed = asyncio.Event()
        async with serve(hook=receiver) as urls:
            sender = fast_sender(
                [urls["hook"]],
                dead_letter=letters.append,
                on_outcome=lambda outcome: failed.set() if outcome == "failed" else None,
            )
            await sender.start()
            sender.submit("intervention", PAYLOAD, "i-1")
            await asyncio.wait_for(failed.wait(), TIMEOUT_S)
            await sender.stop()
        assert len(receiver.requests) == 1
        assert [(letter.reason, letter.detail) for letter in letters] == [
            ("webhook_rejected", "HTTP 400")
        ]

    run(scenario)


def test_a_slow_endpoint_does_not_delay_a_fast_one() -> None:
    async def scenario() -> None:
        slow, fast = Endpoint(hold=asyncio.Event()), Endpoint()
        async with serve(slow=slow, fast=fast) as urls:
            sender = fast_sender([urls["slow"], urls["fast"]], workers_per_endpoint=1)
            await sender.start()
            for index in range(5):
                sender.submit("risk_change", {"n": index}, f"rc-{index}")
            # The slow endpoint holds its first request until the end of the test.
            await fast.wait_for(5)
            await slow.wait_for(1)
            assert len(slow.requests) == 1
            assert slow.hold is not None
            slow.hold.set()
            await slow.wait_for(5)
            await sender.stop()
        assert [h["webhook-id"] for h, _ in fast.requests] == [f"rc-{i}" for i in range(5)]

    run(scenario)


def test_a_full_queue_dead_letters_instead_of_blocking_and_stop_loses_nothing() -> None:
    async def scenario() -> None:
        blocked = Endpoint(hold=asyncio.Event())
        letters: list[DeadLetter] = []
        async with serve(hook=blocked) as urls:
            sender = fast_sender(
                [urls["hook"]], queue_size=1, workers_per_endpoint=1, dead_letter=letters.append
            )
            await sender.start()
            for index in range(5):  # never waits, though the endpoint is stuck
                sender.submit("intervention", {"n": index}, f"i-{index}")
            await blocked.wait_for(1)
            await sender.stop(drain_timeout_s=0.05)
        reasons = sorted((letter.reason, letter.message.msg_id) for letter in letters)
        assert reasons == [
            ("webhook_overflow", "i-1"),
            ("webhook_overflow", "i-2"),
            ("webhook_overflow", "i-3"),
            ("webhook_overflow", "i-4"),
            ("webhook_shutdown", "i-0"),
        ]
        assert sender.stats.overflowed == 4
        assert sender.stats.failed == 5

    run(scenario)


def test_a_bad_secret_is_refused_with_the_variable_named() -> None:
    with pytest.raises(SettingsError, match="CHURNSTREAM_WEBHOOK_SECRET"):
        WebhookSender(["http://127.0.0.1:1/"], "not-a-secret")
    with pytest.raises(SettingsError, match="base64"):
        WebhookSender(["http://127.0.0.1:1/"], "whsec_%%%")
