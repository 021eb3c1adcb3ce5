"""SSE alert stream: a real client on 127.0.0.1 receives, filters, resumes with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from streams.worker.sse import AlertHub

TIMEOUT_S = 5.0
Frame = dict[str, str]


@asynccontextmanager
async def serve(hub: AlertHub) -> AsyncIterator[str]:
    """Serve ``hub`` on 127.0.0.1 (a free port); yield the stream URL."""
    app = web.Application()
    app.router.add_get("/v1/alerts/stream", hub.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/v1/alerts/stream"
    finally:
        hub.close()  # open streams would otherwise hold the shutdown
        await runner.cleanup()


class SseReader:
    """Parses SSE frames off a streaming response (comments come back as ``{":": text}``)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def frame(self) -> Frame:
        async def read() -> Frame:
            frame: Frame = {}
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    raise EOFError("stream ended")
                line = raw.decode().rstrip("\n")
                if not line:
                    if frame:
                        return frame
                    continue
                name, _, value = line.partition(":")
                frame[name or ":"] = value.removeprefix(" ")

        return await asyncio.wait_for(read(), TIMEOUT_S)

    async def events(self, count: int) -> list[Frame]:
        """Return the next ``count`` event frames (skipping comments and retry hints)."""
        out: list[Frame] = []
        while len(out) < count:
            frame = await self.frame()
            if "data" in frame:
                out.append(frame)
        return out


@asynccontextmanager
async def connect(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> AsyncIterator[SseReader]:
    """Open a stream and wait for its ``retry`` hint: from then on the client is subscribed."""
    async with session.get(url, headers=headers or {}) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        reader = SseReader(response)
        assert "retry" in await reader.frame()
        yield reader


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 15))


def change(band: str, customer: str = "c1") -> dict[str, Any]:
    return {"event_id": f"rc-{customer}-{band}", "customer_id": customer, "to_band": band}


def intervention(kind: str, band: str = "HIGH") -> tuple[dict[str, Any], str]:
    """Return an intervention payload and the band the agent would publish it with."""
    created = datetime(2024, 1, 1, tzinfo=UTC)
    return {"intervention_id": f"i-{kind}", "kind": kind, "created_at": created}, band


def test_a_client_receives_events_and_resumes_with_last_event_id() -> None:
    async def scenario() -> None:
        hub = AlertHub(first_id=100)
        async with serve(hub) as url, aiohttp.ClientSession() as session:
            async with connect(session, url) as stream:
                hub.publish("risk_change", change("HIGH"))
                payload, band = intervention("chat")
                hub.publish("intervention", payload, band=band)
                hub.publish("risk_change", change("LOW"))
                first = await stream.events(3)
            assert [f["id"] for f in first] == ["100", "101", "102"]
            assert [f["event"] for f in first] == ["risk_change", "intervention", "risk_change"]
            assert json.loads(first[1]["data"])["created_at"] == "2024-01-01T00:00:00Z"
            # Disconnected: what is published now waits in the ring buffer.
            hub.publish("risk_change", change("CRITICAL"))
            hub.publish("risk_change", change("MEDIUM"))
            async with connect(session, url, {"Last-Event-ID": "102"}) as stream:
                hub.publish("risk_change", change("HIGH", "c2"))
                resumed = await stream.events(3)
            assert [f["id"] for f in resumed] == ["103", "104", "105"]
            assert json.loads(resumed[2]["data"])["customer_id"] == "c2"

    run(scenario)


def test_filters_by_band_and_kind() -> None:
    async def scenario() -> None:
        hub = AlertHub(first_id=1)
        async with serve(hub) as url, aiohttp.ClientSession() as session:
            async with (
                connect(session, f"{url}?band=critical,HIGH&kind=risk_change") as risky,
                connect(session, f"{url}?kind=chat") as chats,
            ):
                hub.publish("risk_change", change("LOW"))
                hub.publish("risk_change", change("CRITICAL"))
                for kind in ("offer", "chat"):
                    payload, band = intervention(kind)
                    hub.publish("intervention", payload, band=band)
                hub.publish("risk_change", change("HIGH"))
                assert [f["id"] for f in await risky.events(2)] == ["2", "5"]
                chat = await chats.events(1)
                assert json.loads(chat[0]["data"])["kind"] == "chat"
            async with session.get(f"{url}?band=SEVERE") as response:
                assert response.status == 400
                assert "'SEVERE'" in (await response.json())["error"]
            async with session.get(url, headers={"Last-Event-ID": "abc"}) as response:
                assert response.status == 400

    run(scenario)


def test_resuming_past_the_buffer_reports_a_gap() -> None:
    async def scenario() -> None:
        hub = AlertHub(buffer_size=3, first_id=1)
        for band in ("LOW", "MEDIUM", "HIGH", "CRITICAL", "HIGH", "MEDIUM"):
            hub.publish("risk_change", change(band))
        async with (
            serve(hub) as url,
            aiohttp.ClientSession() as session,
            connect(session, url, {"Last-Event-ID": "1"}) as stream,
        ):
            gap = await stream.events(1)
            assert gap[0]["event"] == "gap"
            assert json.loads(gap[0]["data"]) == {"last_event_id": 1, "resumed_from": 4}
            assert [f["id"] for f in await stream.events(3)] == ["4", "5", "6"]

    run(scenario)


def test_a_lagging_client_is_dropped_and_never_blocks_publishing() -> None:
    async def scenario() -> None:
        hub = AlertHub(client_queue_size=4, first_id=1)
        slow, _, _ = hub.subscribe()
        fast, _, _ = hub.subscribe(kinds=["intervention"])
        for index in range(50):
            hub.publish("risk_change", change("HIGH", f"c{index}"))
        assert slow.closed
        assert slow.lagged
        assert hub.stats.lagging_dropped == 1
        assert slow not in hub.clients
        assert await slow.queue.get() is None  # its handler is told to finish
        payload, band = intervention("offer")
        hub.publish("intervention", payload, band=band)
        event = await asyncio.wait_for(fast.queue.get(), TIMEOUT_S)
        assert event is not None
        assert event.kind == "intervention"
        # The dropped client resumes from the ring buffer, losing nothing.
        _, backlog, missed = hub.subscribe(last_event_id=4)
        assert not missed
        assert [e.event_id for e in backlog] == list(range(5, 52))

    run(scenario)


def test_heartbeats_keep_an_idle_stream_alive() -> None:
    async def scenario() -> None:
        hub = AlertHub(heartbeat_s=0.05)
        async with (
            serve(hub) as url,
            aiohttp.ClientSession() as session,
            connect(session, url) as stream,
        ):
            assert (await stream.frame()) == {":": "keep-alive"}

    run(scenario)


def test_tokens_are_required_when_configured_and_close_ends_streams() -> None:
    async def scenario() -> None:
        token = "t" * 24
        hub = AlertHub(api_tokens=[token])
        async with serve(hub) as url, aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                assert response.status == 401
            async with session.get(url, headers={"Authorization": "Bearer wrong"}) as response:
                assert response.status == 401
            async with connect(session, url, {"Authorization": f"Bearer {token}"}) as stream:
                hub.close()
                with pytest.raises(EOFError):
                    await stream.frame()
            async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 503

    run(scenario)


def test_publish_rejects_a_kind_that_would_break_the_frame() -> None:
    hub = AlertHub()
    with pytest.raises(ValueError, match="'risk\\\\nchange'"):
        hub.publish("risk\nchange", {})


def test_a_lazy_event_is_built_only_when_read_and_reads_as_an_eager_one() -> None:
    payload = {"customer_id": "c1", "to_band": "HIGH", "as_of": datetime(2024, 1, 1, tzinfo=UTC)}
    built: list[int] = []

    def make() -> dict[str, Any]:
        built.append(1)
        return payload

    eager, lazy = AlertHub(first_id=1), AlertHub(first_id=1)
    eager.publish("risk_change", payload)
    lazy.publish_lazy("risk_change", "HIGH", None, make)
    assert built == [], "nobody listens: nothing built"
    _, from_lazy, _ = lazy.subscribe(last_event_id=0)
    _, from_eager, _ = eager.subscribe(last_event_id=0)
    assert [event.band for event in from_lazy] == ["HIGH"]
    assert from_lazy[0].frame == from_eager[0].frame
    assert from_lazy[0].frame == from_eager[0].frame
    assert built == [1], "built once"
