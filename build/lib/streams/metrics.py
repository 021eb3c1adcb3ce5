"""Every Prometheus metric of a churnstream worker, built as one object against a registry.

:meth:`Metrics.create` registers each metric on the ``CollectorRegistry`` it is given (tests
pass a fresh one, the worker one of its own), so two workers in one process never collide on
the global default registry. The agents call the small methods below; nothing here knows about
Faust, Kafka or the scoring core, so the base layer stays importable from everywhere.

Conventions (see docs/metrics.md): ``churnstream_`` prefix, base units (seconds), counters end
in ``_total``, and no label ever carries a customer id.

:class:`ModelHealth` keeps the prequential (test-then-train) quality of the model: a rolling
ROC AUC and log-loss over the last N (prediction, label) pairs, and a river ADWIN change
detector on the per-example log-loss stream that raises a drift alarm when the error shifts.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from streams.model_health import ModelHealth

# Explicit buckets per histogram: each covers the range its latency really lives in.
EVENT_TO_SCORE_BUCKETS_S: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
ARRIVAL_TO_RISK_CHANGE_BUCKETS_S: Final[tuple[float, ...]] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
API_REQUEST_BUCKETS_S: Final[tuple[float, ...]] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
RECOVERY_BUCKETS_S: Final[tuple[float, ...]] = (
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
)  # fmt: skip

# Log-loss of a certain but wrong prediction is infinite; clipping keeps the stream finite
# (max ~16.1) so the rolling mean and ADWIN's variance bound stay meaningful.
_EPSILON: Final[float] = 1e-7
NO_BAND: Final[str] = "NONE"


@dataclass(slots=True)
class Metrics:
    """Every metric of one worker; the agents call the methods, never the raw metrics."""

    registry: CollectorRegistry
    events_consumed: Counter
    scores: Counter
    event_to_score_seconds: Histogram
    arrival_to_risk_change_seconds: Histogram
    consumer_lag: Gauge
    dead_letters: Counter
    repartitioned: Counter
    risk_changes: Counter
    interventions: Counter
    webhook_deliveries: Counter
    api_requests: Counter
    api_request_seconds: Histogram
    model_info: Info
    model_examples_learned: Gauge
    model_snapshots: Counter
    labels_learned: Counter
    model_auc: Gauge
    model_log_loss: Gauge
    model_health_pairs: Gauge
    drift_alarms: Counter
    table_entries: Gauge
    rebalances: Counter
    recovery_seconds: Histogram
    worker_ready: Gauge
    model_health: ModelHealth
    _consumed_by_topic: dict[str, Any] = field(default_factory=dict)
    _scores_by_band: dict[str, Any] = field(default_factory=dict)
    _changes_by_bands: dict[tuple[str | None, str], Any] = field(default_factory=dict)
    _lag_keys: set[tuple[str, str]] = field(default_factory=set)

    @classmethod
    def create(cls, registry: CollectorRegistry, health_window: int = 1000) -> Metrics:
        """Return every metric registered on ``registry`` (a fresh one per worker or test)."""

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, registry=registry, buckets=buckets)

        # prometheus_client appends "_total" to counters and "_info" to infos itself.
        health = ModelHealth(window=health_window)
        metrics = cls(
            registry=registry,
            events_consumed=counter(
                "churnstream_events_consumed", "Records consumed, by Kafka topic.", ("topic",)
            ),
            scores=counter("churnstream_scores", "Scores emitted, by risk band.", ("band",)),
            event_to_score_seconds=histogram(
                "churnstream_event_to_score_seconds",
                "Wall-clock time from an event's event time to its score being sent.",
                EVENT_TO_SCORE_BUCKETS_S,
            ),
            arrival_to_risk_change_seconds=histogram(
                "churnstream_arrival_to_risk_change_seconds",
                "Time from a record reaching the worker to the risk change it caused being sent.",
                ARRIVAL_TO_RISK_CHANGE_BUCKETS_S,
            ),
            consumer_lag=gauge(
                "churnstream_consumer_lag_messages",
                "Records not yet consumed (high watermark minus next offset to read).",
                ("topic", "partition"),
            ),
            dead_letters=counter(
                "churnstream_dead_letters", "Records sent to dead-letters, by reason.", ("reason",)
            ),
            repartitioned=counter(
                "churnstream_repartitioned",
                "Input records re-keyed by customer id and re-sent to their own partition.",
            ),
            risk_changes=counter(
                "churnstream_risk_changes",
                "Risk band changes, by previous band (NONE for a first band) and new band.",
                ("from_band", "to_band"),
            ),
            interventions=counter(
                "churnstream_interventions",
                "Interventions decided, by kind, channel and holdout (held-out: not sent).",
                ("kind", "channel", "holdout"),
            ),
            webhook_deliveries=counter(
                "churnstream_webhook_deliveries",
                "Webhook delivery attempts, by outcome (delivered, retry, failed).",
                ("outcome",),
            ),
            api_requests=counter(
                "churnstream_api_requests", "Score API requests, by HTTP status code.", ("code",)
            ),
            api_request_seconds=histogram(
                "churnstream_api_request_seconds",
                "Time to answer a score API request on the worker that answered it.",
                API_REQUEST_BUCKETS_S,
            ),
            model_info=Info(
                "churnstream_model", "The model version scores use now.", [], registry=registry
            ),
            model_examples_learned=gauge(
                "churnstream_model_examples_learned",
                "Training examples the model in use had learned when it was published.",
            ),
            model_snapshots=counter(
                "churnstream_model_snapshots",
                "Model snapshots read, by outcome (swapped, stale, refused, undecodable).",
                ("outcome",),
            ),
            labels_learned=counter(
                "churnstream_labels_learned",
                "Delayed labels the trainer learned, by label (1 = churned).",
                ("label",),
            ),
            model_auc=gauge(
                "churnstream_model_auc",
                "Prequential ROC AUC over the last N labelled predictions (NaN until both labels).",
            ),
            model_log_loss=gauge(
                "churnstream_model_log_loss",
                "Prequential mean log-loss over the last N labelled predictions.",
            ),
            model_health_pairs=gauge(
                "churnstream_model_health_pairs",
                "Labelled predictions in the model-health window.",
            ),
            drift_alarms=counter(
                "churnstream_model_drift_alarms",
                "ADWIN changes in the prequential log-loss, by direction (worse, better).",
                ("direction",),
            ),
            table_entries=gauge(
                "churnstream_table_entries",
                "Keys in a table's active partitions on this worker (counted at most once a "
                "minute).",
                ("table",),
            ),
            rebalances=counter("churnstream_rebalances", "Consumer group rebalances started."),
            recovery_seconds=histogram(
                "churnstream_recovery_seconds",
                "Time from a rebalance starting to tables recovered and streams resumed.",
                RECOVERY_BUCKETS_S,
            ),
            worker_ready=gauge("churnstream_worker_ready", "1 when /readyz answers ready, else 0."),
            model_health=health,
        )
        # Computed at scrape time, so a burst of labels never pays for sorting the window.
        metrics.model_auc.set_function(health.auc)
        metrics.model_log_loss.set_function(health.log_loss)
        metrics.model_health_pairs.set_function(lambda: float(health.pairs))
        for direction in ("worse", "better"):
            metrics.drift_alarms.labels(direction=direction)
        return metrics

    def declare_topics(self, topics: Iterable[str]) -> None:
        """Create the per-topic series at 0 so "no events" alerts see a flat line, not nothing."""
        for topic in topics:
            self._consumed_child(topic)

    def _consumed_child(self, topic: str) -> Any:
        # Cached child: this runs once per consumed record, and .labels() takes a lock.
        child = self._consumed_by_topic.get(topic)
        if child is None:
            child = self.events_consumed.labels(topic=topic)
            self._consumed_by_topic[topic] = child
        return child

    def event_consumed(self, topic: str) -> None:
        """Count one record consumed from Kafka ``topic``."""
        self._consumed_child(topic).inc()

    def consumed_many(self, topic: str, count: int) -> None:
        """Count ``count`` records consumed from Kafka ``topic``."""
        self._consumed_child(topic).inc(count)

    def observe_score(self, band: str, event_to_score_s: float | None = None) -> None:
        """Count a score in ``band``; observe its event-time latency when an event caused it."""
        # Cached children, as for events_consumed: this runs once per score.
        child = self._scores_by_band.get(band)
        if child is None:
            child = self._scores_by_band[band] = self.scores.labels(band=band)
        child.inc()
        if event_to_score_s is not None:
            # Producers' clocks may run ahead of ours: a negative latency is a zero one.
            self.event_to_score_seconds.observe(max(0.0, event_to_score_s))

    def observe_risk_change(
        self, from_band: str | None, to_band: str, arrival_to_change_s: float
    ) -> None:
        """Count a band change and how long after its record's arrival it was sent."""
        child = self._changes_by_bands.get((from_band, to_band))
        if child is None:
            child = self.risk_changes.labels(from_band=from_band or NO_BAND, to_band=to_band)
            self._changes_by_bands[from_band, to_band] = child
        child.inc()
        self.arrival_to_risk_change_seconds.observe(max(0.0, arrival_to_change_s))

    def observe_steps(self, steps: ObservedSteps) -> None:
        """Add what :class:`ObservedSteps` counted (one call per list of records)."""
        for band, count in steps.scores_by_band.items():
            child = self._scores_by_band.get(band)
            if child is None:
                child = self._scores_by_band[band] = self.scores.labels(band=band)
            child.inc(count)
        for (from_band, to_band), count in steps.changes.items():
            child = self._changes_by_bands.get((from_band, to_band))
            if child is None:
                child = self.risk_changes.labels(from_band=from_band or NO_BAND, to_band=to_band)
                self._changes_by_bands[from_band, to_band] = child
            child.inc(count)
        observe_many(self.event_to_score_seconds, steps.event_to_score_s)
        observe_many(self.arrival_to_risk_change_seconds, steps.arrival_to_change_s)
        steps.clear()

    def dead_letter(self, reason: str) -> None:
        """Count one record sent to dead-letters for ``reason`` (a DecodeError tag)."""
        self.dead_letters.labels(reason=reason).inc()

    def record_repartitioned(self) -> None:
        """Count one input record re-keyed to its customer's partition."""
        self.repartitioned.inc()

    def intervention(self, kind: str, channel: str | None, holdout: bool) -> None:
        """Count one intervention decision (``channel`` None: no channel allowed, ``holdout``:
        the customer is in the control group and gets nothing)."""
        self.interventions.labels(
            kind=kind, channel=channel or "none", holdout="true" if holdout else "false"
        ).inc()

    def webhook_delivery(self, outcome: str) -> None:
        """Count one webhook delivery attempt: ``delivered``, ``retry`` or ``failed``."""
        self.webhook_deliveries.labels(outcome=outcome).inc()

    def api_request(self, code: int, seconds: float) -> None:
        """Count one score API answer with HTTP status ``code`` and its duration."""
        self.api_requests.labels(code=str(code)).inc()
        self.api_request_seconds.observe(max(0.0, seconds))

    def model_in_use(self, version: str, examples_learned: int) -> None:
        """Report the model scores use now (at start and after every swap)."""
        self.model_info.info({"version": version})
        self.model_examples_learned.set(examples_learned)

    def model_snapshot(self, outcome: str) -> None:
        """Count a snapshot read from the model feed: swapped, stale, refused or undecodable."""
        self.model_snapshots.labels(outcome=outcome).inc()

    def label_learned(self, label: int, prediction: float | None = None) -> str | None:
        """Count a learned label; with the model's prediction made *before* learning it, feed
        the prequential health window. Return the drift direction when ADWIN fired."""
        self.labels_learned.labels(label=str(label)).inc()
        if prediction is None:
            return None
        direction = self.model_health.observe(prediction, label)
        if direction is not None:
            self.drift_alarms.labels(direction=direction).inc()
        return direction

    def set_consumer_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Replace the lag series by ``{(topic, partition): lag}``; revoked partitions vanish."""
        keys = {(topic, str(partition)) for topic, partition in lags}
        for stale_topic, stale_partition in self._lag_keys - keys:
            self.consumer_lag.remove(stale_topic, stale_partition)
        for (topic, partition), lag in lags.items():
            self.consumer_lag.labels(topic=topic, partition=str(partition)).set(max(0, lag))
        self._lag_keys = keys

    def set_table_entries(self, table: str, entries: int) -> None:
        """Report how many keys ``table`` holds in this worker's active partitions."""
        self.table_entries.labels(table=table).set(entries)

    def rebalance_started(self) -> None:
        """Count a consumer group rebalance."""
        self.rebalances.inc()

    def recovery_finished(self, seconds: float) -> None:
        """Observe the time from a rebalance's start to tables recovered and streams resumed."""
        self.recovery_seconds.observe(max(0.0, seconds))

    def readiness(self, probe: Callable[[], bool]) -> None:
        """Make ``churnstream_worker_ready`` follow ``probe`` (called at every scrape)."""
        self.worker_ready.set_function(lambda: 1.0 if probe() else 0.0)


@dataclass(slots=True)
class ObservedSteps:
    """Scores and risk changes of many steps, counted here and added to :class:`Metrics` at once.

    A Prometheus observation takes a lock and walks the buckets (~2 µs); the worker makes
    a few per record. Counted per list of records instead, each series is touched once.
    Negative latencies (a producer's clock ahead of ours) count as zero.
    """

    scores_by_band: dict[str, int] = field(default_factory=dict)
    event_to_score_s: list[float] = field(default_factory=list)
    changes: dict[tuple[str | None, str], int] = field(default_factory=dict)
    arrival_to_change_s: list[float] = field(default_factory=list)

    def score(self, band: str, event_to_score_s: float | None) -> None:
        """Count a score in ``band``, with its event-time latency when an event caused it."""
        self.scores_by_band[band] = self.scores_by_band.get(band, 0) + 1
        if event_to_score_s is not None:
            self.event_to_score_s.append(event_to_score_s if event_to_score_s > 0.0 else 0.0)

    def risk_change(self, from_band: str | None, to_band: str, arrival_to_change_s: float) -> None:
        """Count a band change and how long after its record's arrival it was sent."""
        key = (from_band, to_band)
        self.changes[key] = self.changes.get(key, 0) + 1
        self.arrival_to_change_s.append(arrival_to_change_s if arrival_to_change_s > 0.0 else 0.0)

    def clear(self) -> None:
        """Forget everything counted."""
        self.scores_by_band.clear()
        self.event_to_score_s.clear()
        self.changes.clear()
        self.arrival_to_change_s.clear()


def observe_many(histogram: Histogram, values: Iterable[float]) -> None:
    """Observe ``values`` in an unlabelled ``histogram``, each bucket and the sum touched once.

    The same counts ``Histogram.observe`` gives value by value (a value goes to the first
    bucket whose upper bound is at least the value); falls back to it if the client's
    internals ever differ.
    """
    values = list(values)
    if not values:
        return
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    counts: dict[int, int] = {}
    for value in values:
        index = bisect_left(bounds, value)
        counts[index] = counts.get(index, 0) + 1
    for index, count in counts.items():
        buckets[index].inc(count)
    total.inc(math.fsum(values))
