"""Pushing alerts to chat tools: the SSE hub and the signed webhooks, fed by the agent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from streams.core.interventions import Intervention
from streams.core.records import RiskChange
from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker.sse import AlertHub
from streams.worker.webhooks import DeadLetter, WebhookSender

SendDeadLetter = Callable[[bytes, bytes, list[tuple[str, bytes]]], Awaitable[Any]]


class Delivery:
    """Publishes risk changes and deliverable interventions to SSE clients and webhooks."""

    def __init__(
        self, settings: Settings, metrics: Metrics, send_dead_letter: SendDeadLetter
    ) -> None:
        self.metrics = metrics
        self.hub = AlertHub(api_tokens=settings.api_tokens)
        self._send_dead_letter = send_dead_letter
        self.sender: WebhookSender | None = None
        if settings.webhook_urls:
            self.sender = WebhookSender(
                settings.webhook_urls,
                settings.webhook_secret,
                dead_letter=self._dead_letter,
                on_outcome=metrics.webhook_delivery,
            )

    async def _dead_letter(self, letter: DeadLetter) -> None:
        await self._send_dead_letter(
            letter.message.msg_id.encode(), letter.message.body, letter.headers()
        )

    async def start(self) -> None:
        """Start the webhook workers (if any endpoint is configured)."""
        if self.sender is not None:
            await self.sender.start()

    async def stop(self) -> None:
        """End open SSE streams and drain the webhook queues for a short while."""
        self.hub.close()
        if self.sender is not None:
            await self.sender.stop()

    def risk_change(self, change: RiskChange) -> None:
        """Publish a risk change (never blocks: slow clients and endpoints are queued)."""
        if self.sender is None:
            # built and encoded only if an SSE client reads it
            self.hub.publish_lazy("risk_change", change.to_band, None, change.to_record)
            return
        record = change.to_record()
        self.hub.publish("risk_change", record)
        self.sender.submit(
            "risk_change",
            record,
            change.event_id,
            event_time=change.as_of,
            subject=change.customer_id,
        )

    def intervention(self, item: Intervention, band: str | None) -> None:
        """Publish an intervention that may be delivered now."""
        payload = item.to_json()
        self.hub.publish("intervention", payload, band=band)
        if self.sender is not None:
            self.sender.submit(
                "intervention",
                payload,
                item.intervention_id,
                event_time=item.created_at,
                subject=item.customer_id,
            )


def register_alert_stream(app: Any, hub: AlertHub) -> None:
    """Mount ``GET /v1/alerts/stream`` (Server-Sent Events) on the worker's web server."""
    from faust.web import View

    @app.page("/v1/alerts/stream", name="alert_stream")
    class AlertStream(View):
        """Risk changes and interventions as they happen (filters: band, kind)."""

        async def get(self, request: Any) -> Any:
            """Return the event stream; it resumes after ``Last-Event-ID`` when given."""
            return await hub.handle(request)
