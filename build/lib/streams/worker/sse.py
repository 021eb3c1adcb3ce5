"""``GET /v1/alerts/stream``: Server-Sent Events of risk changes and interventions.

:class:`AlertHub` keeps the last N events in a ring buffer with increasing integer ids.
:meth:`AlertHub.publish` is synchronous and never waits: it encodes the event once and puts
it on each matching client's bounded queue; a client whose queue is full is disconnected
(it lags), and resumes from the ring buffer by reconnecting with ``Last-Event-ID``, which
every EventSource does by itself. Call ``publish`` from the event loop's thread only.

Query parameters (comma-separated, optional): ``band`` (LOW, MEDIUM, HIGH, CRITICAL) and
``kind`` (``risk_change``, ``intervention``, or an intervention kind: chat, offer, message).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from streams.core.config import BANDS

EVENT_KINDS: Final[frozenset[str]] = frozenset({"risk_change", "intervention"})
INTERVENTION_KINDS: Final[frozenset[str]] = frozenset({"chat", "offer", "message"})
_KIND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_HEARTBEAT: Final[bytes] = b": keep-alive\n\n"


@dataclass(slots=True)
class AlertEvent:
    """One published event; its SSE frame is encoded when a client first needs it."""

    event_id: int
    kind: str
    band: str | None
    intervention_kind: str | None
    payload: Callable[[], Mapping[str, Any]] | Mapping[str, Any]
    _frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        """Return the event as an SSE frame (``id``, ``event``, ``data`` lines)."""
        if self._frame is None:
            payload = self.payload() if callable(self.payload) else self.payload
            data = json.dumps(payload, default=_json_default, separators=(",", ":"))
            self._frame = f"id: {self.event_id}\nevent: {self.kind}\ndata: {data}\n\n".encode()
            self.payload = {}  # encoded: what it referenced may go
        return self._frame


@dataclass(slots=True)
class HubStats:
    """Counters for metrics: events published, clients now, clients dropped for lagging."""

    published: int = 0
    clients: int = 0
    lagging_dropped: int = 0


class Subscription:
    """One client's filter and bounded queue; ``None`` on the queue means "closed"."""

    def __init__(self, bands: frozenset[str], kinds: frozenset[str], queue_size: int) -> None:
        self.bands = bands
        self.kinds = kinds
        self.queue: asyncio.Queue[AlertEvent | None] = asyncio.Queue(queue_size + 1)
        self.queue_size = queue_size
        self.lagged = False
        self.closed = False

    def matches(self, event: AlertEvent) -> bool:
        """Return whether ``event`` passes the client's band and kind filters."""
        if self.bands and event.band not in self.bands:
            return False
        return not self.kinds or event.kind in self.kinds or event.intervention_kind in self.kinds

    def offer(self, event: AlertEvent) -> bool:
        """Queue ``event`` if there is room; return False when the client lags too far."""
        # One slot stays free for the close marker, so a lagging client can always be ended.
        if self.queue.qsize() >= self.queue_size:
            return False
        self.queue.put_nowait(event)
        return True

    def end(self, lagged: bool = False) -> None:
        """Drop what is queued and tell the client's handler to finish."""
        if self.closed:
            return
        self.closed = True
        self.lagged = lagged
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class AlertHub:
    """In-memory fan-out of alerts to SSE clients, with replay from a ring buffer."""

    def __init__(
        self,
        buffer_size: int = 1000,
        client_queue_size: int = 256,
        heartbeat_s: float = 15.0,
        max_clients: int = 100,
        api_tokens: Iterable[str] = (),
        first_id: int | None = None,
        retry_ms: int = 2000,
    ) -> None:
        if buffer_size < 1 or client_queue_size < 1 or max_clients < 1:
            msg = (
                "buffer_size, client_queue_size and max_clients must be at least 1, got "
                f"{buffer_size!r}, {client_queue_size!r}, {max_clients!r}"
            )
            raise ValueError(msg)
        self.ring: deque[AlertEvent] = deque(maxlen=buffer_size)
        self.client_queue_size = client_queue_size
        self.heartbeat_s = heartbeat_s
        self.max_clients = max_clients
        self.api_tokens = tuple(api_tokens)
        self.retry_ms = retry_ms
        # Ids start at the wall clock in microseconds, so a restarted worker keeps issuing
        # larger ids and a client's Last-Event-ID from before the restart is recognised as old.
        self.first_id = first_id if first_id is not None else time.time_ns() // 1000
        self.next_id = self.first_id
        self.clients: set[Subscription] = set()
        self.stats = HubStats()
        self.closed = False

    def publish(self, kind: str, payload: Mapping[str, Any], band: str | None = None) -> int:
        """Send an event to every matching client now, without waiting; return its id.

        ``kind`` is ``risk_change`` or ``intervention`` (any lower-case name is accepted);
        ``band`` defaults to the payload's ``to_band`` or ``band``.
        """
        if band is None:
            found = payload.get("to_band", payload.get("band"))
            band = found if isinstance(found, str) else None
        sub_kind = payload.get("kind") if kind == "intervention" else None
        return self.publish_lazy(
            kind, band, sub_kind if isinstance(sub_kind, str) else None, payload
        )

    def publish_lazy(
        self,
        kind: str,
        band: str | None,
        intervention_kind: str | None,
        payload: Callable[[], Mapping[str, Any]] | Mapping[str, Any],
    ) -> int:
        """:meth:`publish` with the payload made (and encoded) only if a client reads it.

        Most events are published with nobody listening: building and encoding each one
        cost more than scoring the record that caused it.
        """
        if not _KIND_NAME.match(kind):
            raise ValueError(f"event kind must be a lower-case name, got {kind!r}")
        event_id = self.next_id
        self.next_id += 1
        event = AlertEvent(event_id, kind, band, intervention_kind, payload)
        self.ring.append(event)
        self.stats.published += 1
        for client in list(self.clients):
            if client.matches(event) and not client.offer(event):
                self._drop(client, lagged=True)
        return event_id

    def subscribe(
        self,
        bands: Iterable[str] = (),
        kinds: Iterable[str] = (),
        last_event_id: int | None = None,
    ) -> tuple[Subscription, list[AlertEvent], bool]:
        """Return a new client, the buffered events after ``last_event_id`` that match it,
        and whether events were missed (older than the buffer, or from before a restart).
        """
        client = Subscription(frozenset(bands), frozenset(kinds), self.client_queue_size)
        backlog: list[AlertEvent] = []
        missed = False
        if last_event_id is not None:
            oldest = self.ring[0].event_id if self.ring else self.next_id
            missed = last_event_id + 1 < oldest
            backlog = [e for e in self.ring if e.event_id > last_event_id and client.matches(e)]
        # Registered in the same synchronous step as the backlog was taken: no event can fall
        # between the two, and none is sent twice.
        self.clients.add(client)
        self.stats.clients = len(self.clients)
        return client, backlog, missed

    def unsubscribe(self, client: Subscription) -> None:
        """Forget ``client`` (its handler has finished)."""
        self.clients.discard(client)
        self.stats.clients = len(self.clients)

    def close(self) -> None:
        """End every stream (worker shutdown) and refuse new ones."""
        self.closed = True
        for client in list(self.clients):
            self._drop(client, lagged=False)

    def _drop(self, client: Subscription, lagged: bool) -> None:
        if lagged:
            self.stats.lagging_dropped += 1
        client.end(lagged=lagged)
        self.unsubscribe(client)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one SSE client until it leaves, lags behind, or the hub closes."""
        if self.api_tokens and not self._authorized(request):
            return web.json_response({"error": "missing or unknown bearer token"}, status=401)
        if self.closed:
            return web.json_response({"error": "shutting down"}, status=503)
        if len(self.clients) >= self.max_clients:
            return web.json_response(
                {"error": f"too many alert streams (max {self.max_clients})"},
                status=503,
                headers={"Retry-After": "5"},
            )
        try:
            bands = _parse_list(request.query.get("band", ""), "band", frozenset(BANDS), str.upper)
            kinds = _parse_list(
                request.query.get("kind", ""), "kind", EVENT_KINDS | INTERVENTION_KINDS, str.lower
            )
            last_event_id = _parse_last_event_id(request)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        client, backlog, missed = self.subscribe(bands, kinds, last_event_id)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                # Reverse proxies (nginx) would otherwise buffer the stream.
                "X-Accel-Buffering": "no",
            }
        )
        try:
            await response.prepare(request)
            await response.write(f"retry: {self.retry_ms}\n\n".encode())
            if missed:
                oldest = backlog[0].event_id if backlog else self.next_id
                gap = json.dumps({"last_event_id": last_event_id, "resumed_from": oldest})
                await response.write(f"event: gap\ndata: {gap}\n\n".encode())
            for event in backlog:
                await response.write(event.frame)
            await self._pump(client, response)
        except ConnectionError:
            pass  # the client went away: nothing to tell it
        finally:
            self.unsubscribe(client)
            client.end()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    async def _pump(self, client: Subscription, response: web.StreamResponse) -> None:
        while True:
            try:
                event = await asyncio.wait_for(client.queue.get(), timeout=self.heartbeat_s)
            except TimeoutError:
                # Comments keep proxies and load balancers from closing an idle stream.
                await response.write(_HEARTBEAT)
                continue
            if event is None:
                if client.lagged:
                    await response.write(b": too far behind; reconnect with Last-Event-ID\n\n")
                return
            await response.write(event.frame)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        presented = token.strip().encode()
        return any(hmac.compare_digest(presented, known.encode()) for known in self.api_tokens)


def _parse_list(
    raw: str, name: str, allowed: frozenset[str], normalise: Callable[[str], str]
) -> frozenset[str]:
    values = frozenset(normalise(part.strip()) for part in raw.split(",") if part.strip())
    unknown = sorted(values - allowed)
    if unknown:
        raise ValueError(f"{name}={unknown[0]!r} is not one of {sorted(allowed)}")
    return values


def _parse_last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID", request.query.get("last_event_id", "")).strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 30:
        raise ValueError(f"Last-Event-ID must be an event id from this stream, got {raw[:40]!r}")
    return int(raw)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"alert payload value {value!r} is not JSON-serialisable")
