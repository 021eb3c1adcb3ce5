"""The Faust shell: the app, its topics and table, and agents that decode, call the core, send."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from streams.core.config import ScoringConfig
from streams.core.intervention_config import InterventionConfig
from streams.errors import ChurnstreamError
from streams.io.avro import AvroCodec, default_codec
from streams.metrics import Metrics
from streams.settings import INPUT_TOPICS, Settings
from streams.worker.agents import wire_agents
from streams.worker.batch_writes import table_reader
from streams.worker.bulk_restore import bulk_restore_store_url
from streams.worker.contacts_in_state import ContactsInState
from streams.worker.delivery import Delivery, register_alert_stream
from streams.worker.intervene import InterventionShell
from streams.worker.models import ModelHolder, TrainerShell
from streams.worker.partitioning import partitioner
from streams.worker.shell import ScoringShell
from streams.worker.table_scan import table_scan
from streams.worker.tuning import TunedApp
from streams.worker.uplift_gauges import UpliftGauges
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
    interventions: InterventionShell
    delivery: Delivery
    uplift_gauges: UpliftGauges
    dead_letters: int = 0
    repartitioned: int = 0
    models_ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def models_caught_up(self) -> bool:
        """Return whether every snapshot published before start has been read."""
        return self.models_ready.is_set()


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
    app = TunedApp(
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
        # A few ms of linger turns one produce request per output into one per batch.
        producer_linger=0.005,
        producer_max_batch_size=256 * 1024,
        # Records of one input partition arrive in fetches of up to this many bytes; the
        # event-time merge holds a topic's records until the partition's other topics catch
        # up, so smaller fetches bound what it holds (faust's default is 4 MiB).
        consumer_max_fetch_size=1024 * 1024,
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
        # Faust's RocksDB store, whose new partitions are bulk-loaded from the changelog
        # before Faust's per-record recovery (streams/worker/bulk_restore.py). Without this
        # argument the table uses the app's "rocksdb://", Faust's own, on the same files.
        store=bulk_restore_store_url("customers"),
    )
    models = ModelHolder(settings.model_secret, codec)
    shell = ScoringShell(
        store=customers,
        config=ScoringConfig(horizon_days=float(settings.horizon_days)),
        model=models.get,
        partition_of=partitioner(partitions),
        wall_grace_s=settings.wall_grace_s,
        scan=table_scan(customers),
        read=table_reader(customers, partitioner(partitions)),
    )
    interventions = InterventionShell(
        ContactsInState(shell),
        InterventionConfig(holdout_percent=settings.holdout_percent),
        partition_of=partitioner(partitions),
    )
    trainer = TrainerShell(settings.model_secret, codec, settings.snapshot_every)
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    dead_letters = raw_topic(app, settings.topic("dead-letters"))

    async def send_dead_letter(key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        await dead_letters.send(key=key, value=value, headers=headers)

    worker = Worker(
        app,
        settings,
        codec,
        shell,
        models,
        trainer,
        metrics,
        interventions,
        Delivery(settings, metrics, send_dead_letter),
        UpliftGauges.create(registry),
    )
    wire_agents(worker)
    metrics.declare_topics(settings.topic(name) for name in INPUT_TOPICS)
    register_views(worker)
    register_alert_stream(app, worker.delivery.hub)
    return worker


def raw_topic(app: faust.App, name: str) -> Any:
    """Return a topic whose keys and values are bytes (Avro is done by the codec)."""
    return app.topic(name, key_serializer="raw", value_serializer="raw", internal=False)
