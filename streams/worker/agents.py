"""The Faust agents: decode, call the plain shells, send. Nothing else happens here."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import faust

from streams.core.events import Event
from streams.core.scoring import StepOutput
from streams.errors import DecodeError
from streams.settings import INPUT_TOPICS
from streams.worker.deadletters import dead_letter_headers
from streams.worker.intervene import Routed
from streams.worker.model_feed import follow_models

if TYPE_CHECKING:
    from streams.worker.app import Worker

log = logging.getLogger(__name__)
# Uplift gauges are cheap to read but iterate every segment: refresh them at most this often.
UPLIFT_REFRESH_S = 5.0


def _raw(app: faust.App, name: str) -> Any:
    return app.topic(name, key_serializer="raw", value_serializer="raw", internal=False)


def wire_agents(worker: Worker) -> None:
    """Declare every agent, task and signal handler of ``worker``'s app."""
    app, settings, codec, shell = worker.app, worker.settings, worker.codec, worker.shell
    input_names = {settings.topic(name): name for name in INPUT_TOPICS}
    inputs = app.topic(*input_names, key_serializer="raw", value_serializer="raw")
    scores = _raw(app, settings.topic("churn-scores"))
    risk_changes = _raw(app, settings.topic("risk-changes"))
    examples = _raw(app, settings.topic("training-examples"))
    interventions = _raw(app, settings.topic("interventions"))
    models_topic = _raw(app, settings.topic("churn-models"))
    dead_letters = _raw(app, settings.topic("dead-letters"))
    resend = {full: _raw(app, full) for full in input_names}
    last_uplift_refresh = [0.0]

    async def send_outputs(out: StepOutput) -> None:
        for score in out.scores:
            value = codec.encode("churn_score", score.to_record())
            await scores.send(key=score.customer_id.encode(), value=value)
        for change in out.risk_changes:
            value = codec.encode("risk_change", change.to_record())
            await risk_changes.send(key=change.customer_id.encode(), value=value)
            worker.delivery.risk_change(change)
        for example in out.training_examples:
            value = codec.encode("training_example", example.to_record())
            await examples.send(key=example.customer_id.encode(), value=value)

    async def send_routed(routed: Routed) -> None:
        for decision in routed.decisions:
            value = codec.encode("intervention", decision.to_record())
            await interventions.send(key=decision.customer_id.encode(), value=value)
            worker.metrics.intervention(decision.kind, decision.channel, decision.holdout)
        for item, band in routed.deliver:
            worker.delivery.intervention(item, band)

    async def decode(message: Any) -> Event | None:
        topic = input_names.get(message.topic, message.topic)
        try:
            return codec.decode_event(message.value or b"", topic=topic, now=datetime.now(UTC))
        except DecodeError as exc:
            worker.dead_letters += 1
            worker.metrics.dead_letter(exc.reason)
            headers = dead_letter_headers(message, exc, exc.reason)
            await dead_letters.send(key=message.key, value=message.value, headers=headers)
            return None

    @app.agent(inputs, name="score")
    async def score(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            arrival_s = time.monotonic()
            message = event.message
            decoded = await decode(message)
            if decoded is None:
                continue
            if (message.key or b"").decode("utf-8", "replace") != decoded.customer_id:
                # Keyed otherwise: re-key by customer so the customer's partition owns it.
                worker.repartitioned += 1
                worker.metrics.record_repartitioned()
                await resend[message.topic].send(
                    key=decoded.customer_id.encode(), value=message.value
                )
                continue
            partition = message.partition
            out = shell.on_event(decoded, partition)
            if settings.wall_grace_s is not None:
                out.extend(shell.on_wall_tick(partition, time.time()))
            await send_outputs(out)
            routed = worker.interventions.on_step(decoded, out, shell.state_of, partition)
            routed.extend(
                worker.interventions.on_watermark(
                    partition, shell.watermark_of(partition), _band_of(worker)
                )
            )
            await send_routed(routed)
            _observe(worker, out, decoded.event_time.timestamp(), arrival_s)
            if arrival_s - last_uplift_refresh[0] >= UPLIFT_REFRESH_S:
                last_uplift_refresh[0] = arrival_s
                worker.uplift_gauges.update(worker.interventions.uplift)
            yield None

    @app.on_partitions_assigned.connect
    def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        shell.forget_partitions()
        worker.interventions.forget_partitions()

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await worker.delivery.stop()

    @app.task  # type: ignore[untyped-decorator] # faust's task decorator is untyped
    async def watch_models() -> None:
        await follow_models(worker, models_topic_name=settings.topic("churn-models"))

    @app.task  # type: ignore[untyped-decorator] # faust's task decorator is untyped
    async def start_delivery() -> None:
        await worker.delivery.start()

    if settings.train:

        @app.agent(examples, name="train")
        async def train(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
            await worker.models_ready.wait()
            worker.trainer.start_from(worker.models.latest_learnable)
            async for value in stream:
                try:
                    snapshot = worker.trainer.learn(value, datetime.now(UTC))
                except DecodeError as exc:
                    log.warning("trainer skipped an undecodable example: %s", exc)
                    continue
                if worker.trainer.last is not None:
                    worker.metrics.label_learned(*worker.trainer.last)
                if snapshot is not None:
                    await models_topic.send(key=b"model", value=snapshot)
                yield None


def _band_of(worker: Worker) -> Any:
    def band_of(customer_id: str) -> str | None:
        state = worker.shell.state_of(customer_id)
        return None if state is None else state.band

    return band_of


def _observe(worker: Worker, out: StepOutput, event_s: float, arrival_s: float) -> None:
    """Record the latency and band metrics of one step's outputs."""
    now_s = time.time()
    for score in out.scores:
        latency_s = None if score.trigger == "timer" else now_s - event_s
        worker.metrics.observe_score(score.band, latency_s)
    for change in out.risk_changes:
        worker.metrics.observe_risk_change(
            change.from_band, change.to_band, time.monotonic() - arrival_s
        )
