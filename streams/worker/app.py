"""The Faust shell: the app, its topics and table, and agents that decode, call the core, send."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust
from kafka.partitioner.default import murmur2
from prometheus_client import CollectorRegistry

from streams.core.config import ScoringConfig
from streams.core.scoring import StepOutput
from streams.errors import ChurnstreamError, DecodeError
from streams.io.avro import AvroCodec, default_codec
from streams.metrics import Metrics
from streams.settings import INPUT_TOPICS, Settings
from streams.worker.deadletters import dead_letter_headers
from streams.worker.model_feed import follow_models
from streams.worker.models import ModelHolder, TrainerShell
from streams.worker.shell import ScoringShell
from streams.worker.web import register_views

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Worker:
    """Everything one worker process holds: the app and the plain objects its agents call."""

    app: faust.App
    settings: Settings
    codec: AvroCodec
    shell: ScoringShell
    models: ModelHolder
    trainer: TrainerShell
    metrics: Metrics
    dead_letters: int = 0
    repartitioned: int = 0
    models_ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def models_caught_up(self) -> bool:
        """Return whether every snapshot published before start has been read."""
        return self.models_ready.is_set()


def partitioner(partitions: int) -> Any:
    """Return ``customer_id -> partition``, the same murmur2 hash Kafka producers use."""

    def partition_of(customer_id: str) -> int:
        return int((murmur2(customer_id.encode("utf-8")) & 0x7FFFFFFF) % partitions)

    return partition_of


def _broker_credentials(settings: Settings) -> Any:
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    ssl_context = None
    if protocol in {"SSL", "SASL_SSL"}:
        import ssl

        cafile = None if settings.kafka_ssl_cafile is None else str(settings.kafka_ssl_cafile)
        ssl_context = ssl.create_default_context(cafile=cafile)
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=ssl_context,
        )
    return faust.SSLCredentials(ssl_context)


def create_worker(settings: Settings, partitions: int) -> Worker:
    """Return a worker whose app has every topic, the customer table and all agents wired."""
    if not settings.model_secret:
        msg = (
            "CHURNSTREAM_MODEL_SECRET is not set: model snapshots could not be signed or "
            "verified. Operator action: set it to the same random string (16+ characters) "
            "on every worker"
        )
        raise ChurnstreamError(msg)
    (settings.data_dir / "worker").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.topic_prefix}churnstream",
        broker=[f"kafka://{server}" for server in settings.broker.split(",")],
        broker_credentials=_broker_credentials(settings),
        store="rocksdb://",
        datadir=str(settings.data_dir / "worker"),
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        topic_partitions=partitions,
        topic_replication_factor=1,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        # Faust's own table views would serve any customer's state without a token.
        web_tables_enabled=False,
    )
    codec = default_codec()
    customers = app.Table(
        "customers",
        default=None,
        # raw-keyed tables did not recover from their changelog: keys are JSON strings
        schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
        partitions=partitions,
    )
    models = ModelHolder(settings.model_secret, codec)
    shell = ScoringShell(
        store=customers,
        config=ScoringConfig(horizon_days=float(settings.horizon_days)),
        model=models.get,
        partition_of=partitioner(partitions),
        wall_grace_s=settings.wall_grace_s,
    )
    trainer = TrainerShell(settings.model_secret, codec, settings.snapshot_every)
    metrics = Metrics.create(CollectorRegistry())
    worker = Worker(app, settings, codec, shell, models, trainer, metrics)
    _wire(worker, partitions)
    metrics.declare_topics(settings.topic(name) for name in INPUT_TOPICS)
    register_views(worker)
    return worker


def _raw_topic(app: faust.App, name: str, partitions: int | None = None) -> Any:
    return app.topic(
        name,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        internal=False,
    )


def _wire(worker: Worker, partitions: int) -> None:
    app, settings, codec, shell = worker.app, worker.settings, worker.codec, worker.shell
    input_names = {settings.topic(name): name for name in INPUT_TOPICS}
    inputs = app.topic(*input_names, key_serializer="raw", value_serializer="raw")
    scores = _raw_topic(app, settings.topic("churn-scores"))
    risk_changes = _raw_topic(app, settings.topic("risk-changes"))
    examples = _raw_topic(app, settings.topic("training-examples"))
    models_topic = _raw_topic(app, settings.topic("churn-models"))
    dead_letters = _raw_topic(app, settings.topic("dead-letters"))
    resend = {full: _raw_topic(app, full) for full in input_names}

    async def send_outputs(out: StepOutput) -> None:
        for score in out.scores:
            await scores.send(
                key=score.customer_id.encode(), value=codec.encode("churn_score", score.to_record())
            )
        for change in out.risk_changes:
            await risk_changes.send(
                key=change.customer_id.encode(),
                value=codec.encode("risk_change", change.to_record()),
            )
        for example in out.training_examples:
            await examples.send(
                key=example.customer_id.encode(),
                value=codec.encode("training_example", example.to_record()),
            )

    @app.agent(inputs, name="score")
    async def score(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            arrival_s = time.monotonic()
            message = event.message
            topic = input_names.get(message.topic, message.topic)
            try:
                decoded = codec.decode_event(
                    message.value or b"", topic=topic, now=datetime.now(UTC)
                )
            except DecodeError as exc:
                worker.dead_letters += 1
                worker.metrics.dead_letter(exc.reason)
                await dead_letters.send(
                    key=message.key,
                    value=message.value,
                    headers=dead_letter_headers(message, exc, exc.reason),
                )
                continue
            key = (message.key or b"").decode("utf-8", "replace")
            if key != decoded.customer_id:
                # Keyed otherwise: re-key by customer so the customer's partition owns it.
                worker.repartitioned += 1
                worker.metrics.record_repartitioned()
                await resend[message.topic].send(
                    key=decoded.customer_id.encode(), value=message.value
                )
                continue
            out = shell.on_event(decoded, message.partition)
            if settings.wall_grace_s is not None:
                out.extend(shell.on_wall_tick(message.partition, time.time()))
            await send_outputs(out)
            _observe(worker, out, decoded.event_time.timestamp(), arrival_s)
            yield None

    @app.on_partitions_assigned.connect
    def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        shell.forget_partitions()

    @app.task  # type: ignore[untyped-decorator] # faust's task decorator is untyped
    async def watch_models() -> None:
        await follow_models(worker, models_topic_name=settings.topic("churn-models"))

    if settings.train:

        @app.agent(examples, name="train")
        async def train(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
            await worker_models_ready(worker)
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


async def worker_models_ready(worker: Worker) -> None:
    """Wait until the model feed has read every published snapshot, then seed the trainer."""
    await worker.models_ready.wait()
    worker.trainer.start_from(worker.models.latest_learnable)


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
