"""Signed webhooks: CloudEvents 1.0 (structured JSON) per Standard Webhooks, with retries.

Each endpoint has its own bounded queue and worker tasks, so a slow or dead endpoint only
fills its own queue: :meth:`WebhookSender.submit` never waits, and a full queue dead-letters
the message instead of blocking the stream. Every attempt is signed anew (receivers reject
old timestamps) but carries the same ``webhook-id``, so receivers drop duplicates by it.
Failed attempts are retried with exponential backoff and full jitter; after the last one
the message goes to the dead-letter callback.

Signature (https://www.standardwebhooks.com): ``webhook-signature: v1,<base64 HMAC-SHA256
of f"{webhook-id}.{webhook-timestamp}.{body}">`` keyed with the base64-decoded part of the
``whsec_`` secret.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import inspect
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from streams.errors import SettingsError

CONTENT_TYPE: Final[str] = "application/cloudevents+json; charset=utf-8"
TYPE_PREFIX: Final[str] = "io.churnstream."
# Statuses worth another try; any other non-2xx answer will not change by retrying.
RETRYABLE_STATUSES: Final[frozenset[int]] = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_DETAIL_BYTES: Final[int] = 2000

log = logging.getLogger(__name__)

DeadLetterCallback = Callable[["DeadLetter"], Awaitable[None] | None]


def decode_secret(secret: str) -> bytes:
    """Return the HMAC key of a Standard Webhooks ``whsec_`` secret, or raise SettingsError."""
    if not secret.startswith("whsec_"):
        raise SettingsError("CHURNSTREAM_WEBHOOK_SECRET: must start with 'whsec_'")
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError) as exc:
        msg = "CHURNSTREAM_WEBHOOK_SECRET: the part after 'whsec_' is not base64"
        raise SettingsError(msg) from exc


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` header value of one attempt.

    The reference vector published with the Standard Webhooks specification:

    >>> key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    >>> sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
    """
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def cloud_event(
    kind: str,
    payload: Mapping[str, Any],
    event_id: str,
    source: str,
    event_time: datetime | None = None,
    subject: str | None = None,
) -> bytes:
    """Return a CloudEvents 1.0 structured-mode JSON body for ``payload``."""
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": TYPE_PREFIX + kind,
        "datacontenttype": "application/json",
        "data": payload,
    }
    if event_time is not None:
        envelope["time"] = _iso(event_time)
    if subject is not None:
        envelope["subject"] = subject
    return json.dumps(envelope, default=_json_default, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class WebhookMessage:
    """One event to deliver: its ``webhook-id`` (= CloudEvent id) and body."""

    msg_id: str
    event_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message an endpoint never accepted, for the ``dead-letters`` topic."""

    url: str
    message: WebhookMessage
    attempts: int
    reason: str
    detail: str

    def headers(self) -> list[tuple[str, bytes]]:
        """Return ``churnstream.errors.*`` headers (the URL without query: it may hold keys)."""
        return [
            ("churnstream.errors.topic", b"webhooks"),
            ("churnstream.errors.class.name", b"WebhookDeliveryError"),
            ("churnstream.errors.exception.message", self.detail.encode()[:MAX_DETAIL_BYTES]),
            ("churnstream.errors.reason", self.reason.encode()),
            ("churnstream.webhook.url", redact_url(self.url).encode()),
            ("churnstream.webhook.id", self.message.msg_id.encode()),
            ("churnstream.webhook.type", self.message.event_type.encode()),
            ("churnstream.webhook.attempts", str(self.attempts).encode()),
        ]


@dataclass(slots=True)
class WebhookStats:
    """Outcome counters: delivered messages, retried attempts, failed (dead-lettered) messages."""

    delivered: int = 0
    retried: int = 0
    failed: int = 0
    overflowed: int = 0


@dataclass(slots=True)
class _Endpoint:
    url: str
    queue: asyncio.Queue[WebhookMessage]
    stats: WebhookStats = field(default_factory=WebhookStats)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    in_flight: set[WebhookMessage] = field(default_factory=set)


class WebhookSender:
    """Delivers events to every configured endpoint, independently of each other."""

    def __init__(
        self,
        urls: Iterable[str],
        secret: str,
        *,
        source: str = "/churnstream",
        queue_size: int = 1000,
        max_attempts: int = 8,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 300.0,
        timeout_s: float = 10.0,
        workers_per_endpoint: int = 2,
        dead_letter: DeadLetterCallback | None = None,
        on_outcome: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = decode_secret(secret)
        if max_attempts < 1 or queue_size < 1 or workers_per_endpoint < 1:
            msg = (
                "max_attempts, queue_size and workers_per_endpoint must be at least 1, got "
                f"{max_attempts!r}, {queue_size!r}, {workers_per_endpoint!r}"
            )
            raise ValueError(msg)
        self.source = source
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.timeout_s = timeout_s
        self.workers_per_endpoint = workers_per_endpoint
        self.dead_letter = dead_letter
        self.on_outcome = on_outcome
        self.rng = rng if rng is not None else random.Random()
        self.clock = clock
        self.endpoints = [_Endpoint(url, asyncio.Queue(queue_size)) for url in dict.fromkeys(urls)]
        self.stats = WebhookStats()
        self._session: aiohttp.ClientSession | None = None
        self._callbacks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the HTTP session and start each endpoint's workers."""
        if self._session is not None:
            return
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)
        for endpoint in self.endpoints:
            for _ in range(self.workers_per_endpoint):
                endpoint.tasks.append(asyncio.create_task(self._work(endpoint)))

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Deliver what is queued for up to ``drain_timeout_s``, then dead-letter the rest."""
        waits = [asyncio.create_task(endpoint.queue.join()) for endpoint in self.endpoints]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=drain_timeout_s)
            for task in pending:
                task.cancel()
        for endpoint in self.endpoints:
            for task in endpoint.tasks:
                task.cancel()
            for task in endpoint.tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            endpoint.tasks.clear()
            leftovers = list(endpoint.in_flight)
            endpoint.in_flight.clear()
            while not endpoint.queue.empty():
                leftovers.append(endpoint.queue.get_nowait())
                endpoint.queue.task_done()
            for message in leftovers:
                await self._fail(endpoint, message, 0, "shutdown", "worker stopped first")
        if self._callbacks:
            await asyncio.gather(*self._callbacks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def submit(
        self,
        kind: str,
        payload: Mapping[str, Any],
        event_id: str,
        event_time: datetime | None = None,
        subject: str | None = None,
    ) -> WebhookMessage:
        """Queue an event for every endpoint without waiting; return the message.

        ``kind`` becomes the CloudEvent type ``io.churnstream.<kind>``; ``event_id`` (the
        record's deterministic id) becomes both the CloudEvent id and the ``webhook-id``.
        """
        body = cloud_event(kind, payload, event_id, self.source, event_time, subject)
        message = WebhookMessage(event_id, TYPE_PREFIX + kind, body)
        for endpoint in self.endpoints:
            try:
                endpoint.queue.put_nowait(message)
            except asyncio.QueueFull:
                endpoint.stats.overflowed += 1
                self.stats.overflowed += 1
                task = asyncio.get_running_loop().create_task(
                    self._fail(endpoint, message, 0, "overflow", "endpoint queue full")
                )
                self._callbacks.add(task)
                task.add_done_callback(self._callbacks.discard)
        return message

    def queued(self) -> dict[str, int]:
        """Return the number of queued messages per endpoint URL (redacted)."""
        return {redact_url(e.url): e.queue.qsize() for e in self.endpoints}

    async def _work(self, endpoint: _Endpoint) -> None:
        while True:
            message = await endpoint.queue.get()
            endpoint.in_flight.add(message)
            try:
                await self._deliver(endpoint, message)
            except asyncio.CancelledError:
                # Left in in_flight on purpose: stop() dead-letters it rather than lose it.
                endpoint.queue.task_done()
                raise
            except Exception:
                # A failing dead-letter callback must not kill the endpoint's worker.
                log.exception("webhook delivery to %s crashed", redact_url(endpoint.url))
            endpoint.in_flight.discard(message)
            endpoint.queue.task_done()

    async def _deliver(self, endpoint: _Endpoint, message: WebhookMessage) -> None:
        reason, detail = "failed", ""
        for attempt in range(1, self.max_attempts + 1):
            status, detail, retry_after_s = await self._attempt(endpoint.url, message)
            if status is not None and 200 <= status < 300:
                self._count(endpoint, "delivered")
                return
            if status is not None and status not in RETRYABLE_STATUSES:
                reason = "rejected"
                break
            if attempt == self.max_attempts:
                break
            self._count(endpoint, "retry")
            ceiling_s = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
            delay_s = self.rng.uniform(0.0, ceiling_s)
            if retry_after_s is not None:
                delay_s = max(delay_s, min(retry_after_s, self.backoff_max_s))
            await asyncio.sleep(delay_s)
        await self._fail(endpoint, message, attempt, reason, detail)

    async def _attempt(
        self, url: str, message: WebhookMessage
    ) -> tuple[int | None, str, float | None]:
        """Return ``(status or None, detail, Retry-After seconds)`` of one signed POST."""
        if self._session is None:
            raise RuntimeError("WebhookSender.start() was not awaited before delivering")
        timestamp = int(self.clock())
        headers = {
            "content-type": CONTENT_TYPE,
            "webhook-id": message.msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.key, message.msg_id, timestamp, message.body),
            "user-agent": "churnstream-webhooks/1",
        }
        try:
            async with self._session.post(
                url, data=message.body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                retry_after = response.headers.get("Retry-After", "")
                retry_after_s = float(retry_after) if retry_after.isdigit() else None
                return response.status, f"HTTP {response.status}", retry_after_s
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}", None

    async def _fail(
        self, endpoint: _Endpoint, message: WebhookMessage, attempts: int, reason: str, detail: str
    ) -> None:
        self._count(endpoint, "failed")
        if self.dead_letter is None:
            return
        letter = DeadLetter(endpoint.url, message, attempts, f"webhook_{reason}", detail)
        result = self.dead_letter(letter)
        if inspect.isawaitable(result):
            await result

    def _count(self, endpoint: _Endpoint, outcome: str) -> None:
        name = {"delivered": "delivered", "retry": "retried", "failed": "failed"}[outcome]
        setattr(endpoint.stats, name, getattr(endpoint.stats, name) + 1)
        setattr(self.stats, name, getattr(self.stats, name) + 1)
        if self.on_outcome is not None:
            self.on_outcome(outcome)


def redact_url(url: str) -> str:
    """Return ``url`` without user info, query or fragment (they may carry credentials).

    >>> redact_url("https://user:pw@hooks.example/x?token=s#f")
    'https://hooks.example/x'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"webhook payload value {value!r} is not JSON-serialisable")
