"""Plain Kafka clients (kafka-python) for the CLI: topic creation, producing files, tailing topics.

The Faust worker has its own clients; these serve one-shot commands and tests.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Final

from kafka import (
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    TopicPartition,
)
from kafka.admin import NewTopic
from kafka.errors import (
    KafkaError,
    TopicAlreadyExistsError,
)

from streams.core.events import Event
from streams.errors import ChurnstreamError, DecodeError
from streams.io.avro import AvroCodec, default_codec
from streams.io.kafka_login import probe_login
from streams.settings import COMPACTED_TOPICS, INPUT_TOPICS, OUTPUT_TOPICS, Settings

ALL_TOPICS: Final[tuple[str, ...]] = INPUT_TOPICS + OUTPUT_TOPICS
# Topics that carry one record per key of unbounded history are compacted; the others keep
# a week, which is longer than any consumer is expected to lag.
RETENTION_MS: Final[str] = str(7 * 24 * 3600 * 1000)
# One model key; one trainer: a single partition makes exactly one worker learn every example.
SINGLE_PARTITION_TOPICS: Final[frozenset[str]] = frozenset({"churn-models", "training-examples"})


# How long the login check waits for a broker's answer (a refused login takes milliseconds).
LOGIN_TIMEOUT_S: Final[float] = 10.0


class KafkaUnavailableError(ChurnstreamError):
    """The broker could not be reached or refused the request."""


class KafkaAuthenticationError(KafkaUnavailableError):
    """The broker refused the SASL login (wrong user name, password or mechanism)."""


def client_config(settings: Settings) -> dict[str, Any]:
    """Return kafka-python connection settings (bootstrap and security) from ``settings``."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.broker.split(","),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism
        config["sasl_plain_username"] = settings.kafka_sasl_username
        config["sasl_plain_password"] = settings.kafka_sasl_password
    if settings.kafka_ssl_cafile is not None:
        config["ssl_cafile"] = str(settings.kafka_ssl_cafile)
    return config


def check_login(settings: Settings, timeout_s: float = LOGIN_TIMEOUT_S) -> None:
    """Return if the broker accepts the SASL login of ``settings`` (no-op without SASL).

    kafka-python retries a refused login until its 30 s bootstrap timeout and then calls
    the broker unreachable; this asks the first bootstrap server that answers and raises
    :class:`KafkaAuthenticationError` at once, saying what to fix. A broker that cannot
    be reached is left to the client that follows (it reports that as before).
    """
    if not settings.kafka_security_protocol.startswith("SASL_"):
        return
    context = None
    if settings.kafka_security_protocol == "SASL_SSL":
        cafile = None if settings.kafka_ssl_cafile is None else str(settings.kafka_ssl_cafile)
        context = ssl.create_default_context(cafile=cafile)
    for server in settings.broker.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            verdict = probe_login(
                host.strip("[]"),
                int(port),
                str(settings.kafka_sasl_mechanism),
                str(settings.kafka_sasl_username),
                str(settings.kafka_sasl_password),
                context,
                timeout_s,
            )
        except ssl.SSLCertVerificationError as exc:
            msg = (
                f"Kafka at {server} has a certificate we do not trust ({exc.verify_message}). "
                "Operator action: point CHURNSTREAM_KAFKA_SSL_CAFILE at the CA that signed it"
            )
            raise KafkaUnavailableError(msg) from exc
        except OSError:
            continue  # unreachable: the client that follows reports it
        if verdict.accepted:
            return
        msg = (
            f"Kafka at {server} refused the {settings.kafka_sasl_mechanism} login of user "
            f"{settings.kafka_sasl_username!r} ({verdict.detail or 'authentication failed'}). "
            "Operator action: fix CHURNSTREAM_KAFKA_SASL_USERNAME / "
            "CHURNSTREAM_KAFKA_SASL_PASSWORD (or _SASL_MECHANISM) to match a user of the broker"
        )
        raise KafkaAuthenticationError(msg)


def _unavailable(settings: Settings, exc: Exception) -> KafkaUnavailableError:
    return KafkaUnavailableError(
        f"Kafka at {settings.broker} is not reachable ({exc.__class__.__name__}: {exc}). "
        "Operator action: start it (`churnstream kafka up`) or fix --broker / CHURNSTREAM_BROKER"
    )


def topic_configs(name: str) -> dict[str, str]:
    """Return the broker-side config of churnstream topic ``name`` (unprefixed)."""
    if name in COMPACTED_TOPICS:
        return {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
    return {"cleanup.policy": "delete", "retention.ms": RETENTION_MS}


def create_topics(settings: Settings, partitions: int | None = None) -> list[str]:
    """Create every churnstream topic that does not exist yet; return the names created."""
    count = partitions or settings.partitions
    check_login(settings)
    try:
        admin = KafkaAdminClient(**client_config(settings), request_timeout_ms=15000)
    except (KafkaError, OSError) as exc:
        raise _unavailable(settings, exc) from exc
    created: list[str] = []
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                name=settings.topic(name),
                num_partitions=1 if name in SINGLE_PARTITION_TOPICS else count,
                replication_factor=1,
                topic_configs=topic_configs(name),
            )
            for name in ALL_TOPICS
            if settings.topic(name) not in existing
        ]
        for topic in wanted:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
    except KafkaError as exc:
        raise _unavailable(settings, exc) from exc
    finally:
        with contextlib.suppress(Exception):
            admin.close()
    return created


def producer(settings: Settings, **extra: Any) -> Any:
    """Return a kafka-python producer for ``settings`` (idempotent, acks=all)."""
    check_login(settings)
    try:
        return KafkaProducer(
            **client_config(settings),
            acks="all",
            linger_ms=5,
            enable_idempotence=True,
            **extra,
        )
    except (KafkaError, OSError) as exc:
        raise _unavailable(settings, exc) from exc


def produce_events(
    settings: Settings, events: Iterable[Event], codec: AvroCodec | None = None
) -> dict[str, int]:
    """Publish ``events`` as Avro keyed by customer id; return the count sent per topic."""
    codec = codec or default_codec()
    client = producer(settings)
    counts: dict[str, int] = {}
    try:
        for event in events:
            topic, value = codec.encode_event(event)
            client.send(settings.topic(topic), key=event.customer_id.encode("utf-8"), value=value)
            counts[topic] = counts.get(topic, 0) + 1
        client.flush(timeout=60)
    except KafkaError as exc:
        raise _unavailable(settings, exc) from exc
    finally:
        client.close(timeout=10)
    return counts


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def decode_record(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes]],
    codec: AvroCodec,
) -> dict[str, Any]:
    """Return one record of an unprefixed churnstream ``topic`` as a JSON-ready dict."""
    out: dict[str, Any] = {"key": None if key is None else key.decode("utf-8", "replace")}
    if value is None:
        out["value"] = None
    elif topic == "dead-letters" or codec.topic_schemas.get(topic) is None:
        out["value"] = base64.b64encode(value).decode("ascii")
    else:
        try:
            _, record = codec.decode(value)
            out["value"] = _jsonable(record)
        except DecodeError as exc:
            out["value"] = base64.b64encode(value).decode("ascii")
            out["error"] = str(exc)
    header_list = list(headers or [])
    if header_list:
        out["headers"] = {name: raw.decode("utf-8", "replace") for name, raw in header_list}
    return out


def iter_topic(
    settings: Settings,
    topic: str,
    from_beginning: bool = False,
    max_records: int | None = None,
    timeout_s: float = 10.0,
    codec: AvroCodec | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield decoded records of ``topic`` until ``max_records`` or ``timeout_s`` of quiet."""
    codec = codec or default_codec()
    full_name = settings.topic(topic)
    check_login(settings)
    try:
        consumer = KafkaConsumer(**client_config(settings), enable_auto_commit=False)
    except (KafkaError, OSError) as exc:
        raise _unavailable(settings, exc) from exc
    try:
        partitions = _wait_partitions(consumer, full_name, timeout_s)
        assigned = [TopicPartition(full_name, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if from_beginning:
            consumer.seek_to_beginning(*assigned)
        else:
            consumer.seek_to_end(*assigned)
        seen = 0
        last_record = time.monotonic()
        while max_records is None or seen < max_records:
            batch = consumer.poll(timeout_ms=200)
            if not batch:
                if time.monotonic() - last_record >= timeout_s:
                    return
                continue
            last_record = time.monotonic()
            for records in batch.values():
                for record in records:
                    yield decode_record(topic, record.key, record.value, record.headers, codec)
                    seen += 1
                    if max_records is not None and seen >= max_records:
                        return
    finally:
        consumer.close()


def _wait_partitions(consumer: Any, topic: str, timeout_s: float) -> set[int]:
    deadline = time.monotonic() + max(timeout_s, 5.0)
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        if time.monotonic() >= deadline:
            msg = f"topic {topic!r} does not exist: run `churnstream topics create` first"
            raise KafkaUnavailableError(msg)
        time.sleep(0.2)


def print_records(records: Iterable[dict[str, Any]], write: Callable[[str], Any]) -> int:
    """Write each record as one JSON line; return how many were written."""
    count = 0
    for record in records:
        write(json.dumps(record, sort_keys=True) + "\n")
        count += 1
    return count
