"""The worker's HTTP API: customer scores (routed to the owning worker), /metrics, probes.

The request logic is plain functions (:func:`check_bearer`, :func:`validate_customer_id`,
:func:`score_payload`, :func:`precheck`) that know nothing of Faust; :func:`register_views`
mounts them on the Faust app. Auth and validation run on the worker that receives a request,
before it is forwarded, so a bad request never costs a hop.

Routing: the customers table's changelog is keyed by the JSON-serialised id (``"c1"`` with its
quotes), so ``@app.table_route`` would hash different bytes than the producers did and, for
most ids, ask a worker that does not own the customer. Table partition p is co-assigned with
input partition p, so the view routes with ``@app.topic_route`` on an input topic, whose raw
keys hash exactly like the producers' (murmur2 of the id's UTF-8 bytes).

``/metrics``: this Faust version serves no ``/metrics`` of its own (its JSON performance view
sits at ``/performance/`` and is off by default), so the path is free; it serves
``prometheus_client.generate_latest`` of the worker's registry after refreshing the gauges that
are read at scrape time (consumer lag; the table size, counted in a thread at most once a
minute).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import aiohttp
from faust.sensors import Sensor
from faust.web import View
from faust.web.exceptions import ServiceUnavailable
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.core.config import ScoringConfig
from streams.core.model import ChurnModel
from streams.core.scoring import score_as_of
from streams.core.state import CustomerState
from streams.errors import ValidationError
from streams.metrics import Metrics
from streams.settings import INPUT_TOPICS, Settings
from streams.worker.models import ModelHolder
from streams.worker.shell import ScoringShell

log = logging.getLogger(__name__)

SCORE_PATH: Final[str] = "/v1/customers/{customer_id}/score"
MAX_CUSTOMER_ID_LENGTH: Final[int] = 128
# RFC 3986 "unreserved": an id made of these needs no escaping anywhere in a URL.
_URL_SAFE_ID = re.compile(r"[A-Za-z0-9._~-]+")
# A forward to a dead owner must not hold the caller for aiohttp's 5-minute default.
ROUTE_TIMEOUT_S: Final[float] = 5.0
NO_STORE: Final[dict[str, str]] = {"Cache-Control": "no-store"}
# Any input topic routes right: all three are co-partitioned with the customers table.
ROUTING_TOPIC: Final[str] = INPUT_TOPICS[1]
TABLE_COUNT_EVERY_S: Final[float] = 60.0


class WebWorker(Protocol):
    """What the views need of ``streams.worker.app.Worker``."""

    app: Any
    settings: Settings
    shell: ScoringShell
    models: ModelHolder
    metrics: Metrics

    @property
    def models_caught_up(self) -> bool:
        """Whether every model snapshot published before start has been read."""
        ...


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer before it becomes a framework response."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=lambda: dict(NO_STORE))


def check_bearer(header: str | None, tokens: tuple[str, ...]) -> bool:
    """Return whether ``Authorization: header`` carries one of ``tokens`` (no tokens: open).

    Every token is compared in constant time and all are compared, so neither the timing of
    one comparison nor the position of the match leaks anything.

    >>> check_bearer("Bearer s3cret-token-0123456", ("s3cret-token-0123456",))
    True
    >>> check_bearer("Bearer wrong", ("s3cret-token-0123456",)), check_bearer(None, ())
    (False, True)
    """
    if not tokens:
        return True
    if header is None:
        return False
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return False
    offered = credentials.strip().encode("utf-8", "surrogateescape")
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(offered, token.encode("utf-8"))
    return matched


def validate_customer_id(raw: object) -> str:
    """Return ``raw`` if it is a well-formed customer id; raise ValidationError otherwise.

    Well-formed: 1 to 128 characters, all URL-safe (letters, digits, ``-._~``), which also
    rules out control characters and anything that would need escaping in logs or URLs.

    >>> validate_customer_id("c-000042")
    'c-000042'
    """
    if not isinstance(raw, str) or raw == "":
        raise ValidationError("customer id must be a non-empty string", field="customer_id")
    if len(raw) > MAX_CUSTOMER_ID_LENGTH:
        msg = f"customer id longer than {MAX_CUSTOMER_ID_LENGTH} characters ({len(raw)})"
        raise ValidationError(msg, field="customer_id")
    if any(ord(char) < 32 or ord(char) == 127 for char in raw):
        raise ValidationError("customer id contains control characters", field="customer_id")
    if not _URL_SAFE_ID.fullmatch(raw):
        msg = "customer id may only contain letters, digits and '-', '.', '_', '~'"
        raise ValidationError(msg, field="customer_id")
    return raw


def score_payload(
    customer_id: str,
    raw_state: Mapping[str, Any] | None,
    model: ChurnModel,
    config: ScoringConfig,
) -> dict[str, Any] | None:
    """Return the JSON body of a customer's score at the customer's own clock (None: unknown).

    Scores a copy of the stored state, so a read never changes what the worker keeps; at the
    state's own clock the answer equals the last score the pipeline emitted for the customer
    (same events, same model), which keeps the API consistent with ``churn-scores``.
    """
    if raw_state is None:
        return None
    state = CustomerState.from_dict(dict(raw_state))
    _, out = score_as_of(state, state.clock_s, model, config)
    score = out.scores[-1]
    return {
        "customer_id": customer_id,
        "score": score.score,
        "band": score.band,
        "reasons": [reason.to_record() for reason in score.reasons],
        "model_version": score.model_version,
        "as_of": score.as_of.isoformat(),
    }


def _error(status: int, error: str, detail: str, **headers: str) -> Answer:
    return Answer(status, {"error": error, "detail": detail}, {**NO_STORE, **headers})


def precheck(authorization: str | None, raw_id: object, tokens: tuple[str, ...]) -> Answer | None:
    """Return the 401/400 answer a request gets before routing, or None if it may go on."""
    if not check_bearer(authorization, tokens):
        return _error(
            401,
            "unauthorized",
            "send 'Authorization: Bearer <token>' with a token from CHURNSTREAM_API_TOKENS",
            **{"WWW-Authenticate": 'Bearer realm="churnstream"'},
        )
    try:
        validate_customer_id(raw_id)
    except ValidationError as exc:
        return _error(400, "bad_customer_id", str(exc))
    return None


def answer_locally(
    customer_id: str, raw_state: Mapping[str, Any] | None, model: ChurnModel, config: ScoringConfig
) -> Answer:
    """Return the 200 answer with the score, or 404 when this owner never saw the customer."""
    payload = score_payload(customer_id, raw_state, model, config)
    if payload is None:
        return _error(404, "unknown_customer", "no events seen for this customer id")
    return Answer(200, payload)


def readiness(app: Any, models_caught_up: bool) -> dict[str, bool]:
    """Return the readiness checks of a worker and ``ready``, which is all of them.

    Not ready before the first table recovery completes, while any later recovery runs
    (reads would see a half-restored table), or before the model feed caught up.
    """
    recovery: Any = getattr(app.tables, "recovery", None)
    recovered = recovery is not None and recovery.completed.is_set()
    recovering = bool(getattr(app, "in_recovery", False))
    ready = recovered and not recovering and models_caught_up
    return {
        "ready": ready,
        "tables_recovered": recovered,
        "recovering": recovering,
        "models_caught_up": models_caught_up,
    }


class MetricsSensor(Sensor):
    """Faust sensor feeding Metrics: records consumed, rebalances, recovery time, read offsets."""

    def __init__(self, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics
        # Last offset read per (topic, partition): the consumer-lag baseline at scrape time.
        self.read_offsets: dict[tuple[str, int], int] = {}

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        """Count a consumed record and remember how far its partition has been read."""
        self.metrics.event_consumed(tp.topic)
        self.read_offsets[(tp.topic, tp.partition)] = offset

    def on_records_in(self, tp: Any, count: int, last_offset: int) -> None:
        """Count records a batch handler takes at once (streams/worker/dispatch.py)."""
        self.metrics.consumed_many(tp.topic, count)
        self.read_offsets[(tp.topic, tp.partition)] = last_offset

    def on_rebalance_start(self, app: Any) -> dict[str, float]:
        """Count the rebalance and note when it started."""
        self.metrics.rebalance_started()
        return {"started": time.monotonic()}

    def on_rebalance_end(self, app: Any, state: dict[str, float]) -> None:
        """Observe rebalance start to tables recovered (Faust calls this after recovery)."""
        self.metrics.recovery_finished(time.monotonic() - state["started"])


def consumer_lags(consumer: Any, read_offsets: Mapping[tuple[str, int], int]) -> dict[Any, int]:
    """Return ``{(topic, partition): lag}`` of the assigned partitions whose position is known.

    The high watermark comes from the consumer's last fetch (no broker round trip); partitions
    not fetched yet, or not read yet, are left out rather than guessed.
    """
    lags: dict[Any, int] = {}
    for tp in consumer.assignment():
        key = (tp.topic, tp.partition)
        highwater = consumer.highwater(tp)
        if highwater is None or key not in read_offsets:
            continue
        lags[key] = max(0, int(highwater) - (read_offsets[key] + 1))
    return lags


class TableSizeProbe:
    """Counts a table's keys in a thread, at most every ``every_s``; scrapes read the last count.

    RocksDB's ``estimate-num-keys`` counts every unflushed write of a key, so an update-heavy
    table reads many times too large (~25x on the CDNOW demo data); an exact count walks all
    keys (~0.4 s per million), which the event loop must not wait for.
    """

    def __init__(self, every_s: float = TABLE_COUNT_EVERY_S) -> None:
        self.every_s = every_s
        self._started_at = -math.inf
        self._running: asyncio.Future[int] | None = None

    def maybe_count(self, table: Any, report: Callable[[int], None]) -> None:
        """Start a count of ``table`` unless one runs or one started within ``every_s``."""
        now = time.monotonic()
        if self._running is not None or now - self._started_at < self.every_s:
            return
        self._started_at = now
        self._running = asyncio.ensure_future(asyncio.to_thread(len, table))

        def done(future: asyncio.Future[int]) -> None:
            self._running = None
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:  # e.g. a rebalance swapped the partitions' databases
                log.debug("table size not counted: %r", error)
                return
            report(future.result())

        self._running.add_done_callback(done)


def refresh_gauges(worker: WebWorker, sensor: MetricsSensor, table_size: TableSizeProbe) -> None:
    """Update the scrape-time gauges (lag, table size); a failure keeps the previous values."""
    try:
        worker.metrics.set_consumer_lag(consumer_lags(worker.app.consumer, sensor.read_offsets))
    except Exception as exc:  # a scrape must answer even while Kafka is away
        log.debug("consumer lag not available: %s", exc)
    store = worker.shell.store
    name = str(getattr(store, "name", "customers"))
    table_size.maybe_count(store, lambda entries: worker.metrics.set_table_entries(name, entries))


def _respond(view: Any, answer: Answer) -> Any:
    return view.json(answer.body, status=answer.status, headers=answer.headers)


def register_views(worker: WebWorker) -> MetricsSensor:
    """Mount the score API, /metrics, /healthz and /readyz, add the metrics sensor; return it."""
    app, settings, metrics = worker.app, worker.settings, worker.metrics
    tokens = settings.api_tokens
    if not tokens:
        log.warning("CHURNSTREAM_API_TOKENS is empty: the score API answers without a token")
    sensor = MetricsSensor(metrics)
    table_size = TableSizeProbe()
    app.sensors.add(sensor)
    metrics.readiness(lambda: readiness(app, worker.models_caught_up)["ready"])
    metrics.model_in_use(worker.models.version, worker.models.get().examples_learned)
    routing_topic = app.topic(
        settings.topic(ROUTING_TOPIC), key_serializer="raw", value_serializer="raw"
    )

    async def answer_here(view: Any, request: Any, customer_id: str) -> Any:
        raw_state = worker.shell.store.get(customer_id)
        answer = answer_locally(customer_id, raw_state, worker.models.get(), worker.shell.config)
        return _respond(view, answer)

    routed = app.topic_route(topic=routing_topic, match_info="customer_id")(answer_here)

    @app.page(SCORE_PATH, name="customer_score")
    class CustomerScore(View):
        """GET a customer's current churn score, answered by the worker that owns it."""

        async def get(self, request: Any, customer_id: str) -> Any:
            """Return the score (200), or 400/401/404/503 as an error object."""
            started = time.perf_counter()
            answer = precheck(request.headers.get("Authorization"), customer_id, tokens)
            if answer is not None:
                response = _respond(self, answer)
            else:
                try:
                    async with asyncio.timeout(ROUTE_TIMEOUT_S):
                        response = await routed(self, request, customer_id=customer_id)
                except (ServiceUnavailable, aiohttp.ClientError, TimeoutError) as exc:
                    # No assignment yet, or the owner did not answer: the client should retry.
                    log.warning("score request could not reach the owning worker: %r", exc)
                    unavailable = _error(
                        503, "owner_unavailable", "the owning worker is not reachable; retry"
                    )
                    response = self.json(
                        unavailable.body,
                        status=503,
                        headers={**unavailable.headers, "Retry-After": "1"},
                    )
            metrics.api_request(int(response.status), time.perf_counter() - started)
            return response

    @app.page("/metrics", name="prometheus_metrics")  # type: ignore[untyped-decorator]  # faust
    async def prometheus_metrics(view: Any, request: Any) -> Any:
        refresh_gauges(worker, sensor, table_size)
        # aiohttp refuses a charset inside content_type; exposition text is ASCII anyway.
        content_type = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"
        return view.bytes(generate_latest(metrics.registry), content_type=content_type)

    @app.page("/healthz", name="healthz")  # type: ignore[untyped-decorator]  # faust
    async def healthz(view: Any, request: Any) -> Any:
        return view.json({"status": "ok"})

    @app.page("/readyz", name="readyz")  # type: ignore[untyped-decorator]  # faust
    async def readyz(view: Any, request: Any) -> Any:
        checks = readiness(app, worker.models_caught_up)
        return view.json(checks, status=200 if checks["ready"] else 503, headers=dict(NO_STORE))

    return sensor
