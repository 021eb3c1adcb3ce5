"""Metrics: names and labels follow the conventions; methods count; model health is exact."""

from __future__ import annotations

import math
import random

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams import metrics as metrics_module
from streams.metrics import Metrics, ObservedSteps
from streams.model_health import ModelHealth, log_loss_of, roc_auc


def _families(metrics: Metrics) -> dict[str, object]:
    text = generate_latest(metrics.registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def _brute_force_auc(pairs: list[tuple[float, int]]) -> float:
    positives = [p for p, label in pairs if label == 1]
    negatives = [p for p, label in pairs if label == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def test_every_metric_follows_the_naming_conventions() -> None:
    metrics = Metrics.create(CollectorRegistry())
    metrics.declare_topics(["orders"])
    families = _families(metrics)
    assert len(families) >= 20
    for family in metrics.registry.collect():
        assert family.name.startswith("churnstream_"), family.name
        for sample in family.samples:
            assert not any("customer" in label for label in sample.labels), sample
            if family.type == "counter" and sample.name.endswith(("_total", "_created")):
                continue
            assert family.type != "counter", sample.name
    counters = [f for f in metrics.registry.collect() if f.type == "counter"]
    assert all(
        s.name.endswith(("_total", "_created")) for family in counters for s in family.samples
    )


def test_histograms_use_their_explicit_buckets() -> None:
    metrics = Metrics.create(CollectorRegistry())
    expected = {
        "churnstream_event_to_score_seconds": metrics_module.EVENT_TO_SCORE_BUCKETS_S,
        "churnstream_arrival_to_risk_change_seconds": (
            metrics_module.ARRIVAL_TO_RISK_CHANGE_BUCKETS_S
        ),
        "churnstream_api_request_seconds": metrics_module.API_REQUEST_BUCKETS_S,
        "churnstream_recovery_seconds": metrics_module.RECOVERY_BUCKETS_S,
    }
    for family in metrics.registry.collect():
        if family.type != "histogram":
            continue
        bounds = [float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")]
        assert tuple(bounds[:-1]) == expected.pop(family.name)
        assert math.isinf(bounds[-1])
    assert expected == {}


def test_two_workers_in_one_process_do_not_collide_but_one_registry_refuses_twice() -> None:
    Metrics.create(CollectorRegistry())
    Metrics.create(CollectorRegistry())
    registry = CollectorRegistry()
    Metrics.create(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Metrics.create(registry)


def test_methods_count_what_the_agents_report() -> None:
    metrics = Metrics.create(CollectorRegistry())
    metrics.declare_topics(["t-orders", "t-clickstream"])
    assert _sample(metrics, "churnstream_events_consumed_total", topic="t-clickstream") == 0.0
    for _ in range(3):
        metrics.event_consumed("t-orders")
    metrics.observe_score("HIGH", event_to_score_s=0.02)
    metrics.observe_score("HIGH", event_to_score_s=-5.0)  # producer clock ahead of ours
    metrics.observe_score("LOW")  # a timer's score: no event latency
    metrics.observe_risk_change(None, "LOW", 0.0004)
    metrics.observe_risk_change("LOW", "HIGH", 0.002)
    metrics.dead_letter("truncated")
    metrics.record_repartitioned()
    metrics.intervention("offer", "email", holdout=True)
    metrics.webhook_delivery("failed")
    metrics.api_request(404, 0.001)
    metrics.rebalance_started()
    metrics.recovery_finished(3.0)
    metrics.set_table_entries("customers", 1234)
    assert _sample(metrics, "churnstream_events_consumed_total", topic="t-orders") == 3.0
    assert _sample(metrics, "churnstream_scores_total", band="HIGH") == 2.0
    assert _sample(metrics, "churnstream_event_to_score_seconds_count") == 2.0
    assert _sample(metrics, "churnstream_event_to_score_seconds_bucket", le="0.001") == 1.0
    assert _sample(metrics, "churnstream_risk_changes_total", from_band="NONE", to_band="LOW")
    assert _sample(metrics, "churnstream_arrival_to_risk_change_seconds_count") == 2.0
    assert _sample(metrics, "churnstream_dead_letters_total", reason="truncated") == 1.0
    assert _sample(metrics, "churnstream_repartitioned_total") == 1.0
    assert (
        _sample(
            metrics,
            "churnstream_interventions_total",
            kind="offer",
            channel="email",
            holdout="true",
        )
        == 1.0
    )
    assert _sample(metrics, "churnstream_webhook_deliveries_total", outcome="failed") == 1.0
    assert _sample(metrics, "churnstream_api_requests_total", code="404") == 1.0
    assert _sample(metrics, "churnstream_rebalances_total") == 1.0
    assert _sample(metrics, "churnstream_recovery_seconds_sum") == 3.0
    assert _sample(metrics, "churnstream_table_entries", table="customers") == 1234.0


def test_consumer_lag_is_replaced_so_revoked_partitions_disappear() -> None:
    metrics = Metrics.create(CollectorRegistry())
    metrics.set_consumer_lag({("orders", 0): 5, ("orders", 1): 7})
    metrics.set_consumer_lag({("orders", 1): 2, ("clickstream", 1): -3})
    assert (
        _sample(metrics, "churnstream_consumer_lag_messages", topic="orders", partition="0") is None
    )
    assert _sample(metrics, "churnstream_consumer_lag_messages", topic="orders", partition="1") == 2
    lag = _sample(metrics, "churnstream_consumer_lag_messages", topic="clickstream", partition="1")
    assert lag == 0.0


def test_model_info_shows_only_the_version_in_use() -> None:
    metrics = Metrics.create(CollectorRegistry())
    metrics.model_in_use("prior-v1", 0)
    metrics.model_in_use("m-000500", 500)
    metrics.model_snapshot("swapped")
    assert _sample(metrics, "churnstream_model_info", version="m-000500") == 1.0
    assert _sample(metrics, "churnstream_model_info", version="prior-v1") is None
    assert _sample(metrics, "churnstream_model_examples_learned") == 500.0
    assert _sample(metrics, "churnstream_model_snapshots_total", outcome="swapped") == 1.0


def test_labels_feed_the_model_health_gauges_at_scrape_time() -> None:
    metrics = Metrics.create(CollectorRegistry(), health_window=100)
    assert math.isnan(_sample(metrics, "churnstream_model_auc") or 0.0)
    metrics.label_learned(1)  # no prediction: counted, not evaluated
    for prediction, label in [(0.9, 1), (0.8, 1), (0.3, 0), (0.6, 0)]:
        metrics.label_learned(label, prediction)
    assert _sample(metrics, "churnstream_labels_learned_total", label="1") == 3.0
    assert _sample(metrics, "churnstream_model_auc") == 1.0
    assert _sample(metrics, "churnstream_model_health_pairs") == 4.0
    expected = sum(log_loss_of(p, y) for p, y in [(0.9, 1), (0.8, 1), (0.3, 0), (0.6, 0)]) / 4
    assert _sample(metrics, "churnstream_model_log_loss") == pytest.approx(expected)
    assert _sample(metrics, "churnstream_model_drift_alarms_total", direction="worse") == 0.0


def test_roc_auc_is_exact_against_all_pairs() -> None:
    rng = random.Random(7)
    for _ in range(20):
        pairs = [(round(rng.random(), 2), rng.randint(0, 1)) for _ in range(rng.randint(2, 80))]
        if len({label for _, label in pairs}) < 2:
            assert math.isnan(roc_auc(pairs))
            continue
        assert roc_auc(pairs) == pytest.approx(_brute_force_auc(pairs))


def test_model_health_rolls_over_the_last_n_pairs() -> None:
    health = ModelHealth(window=4)
    for prediction, label in [(0.1, 1), (0.9, 0), (0.2, 1), (0.8, 0)]:
        health.observe(prediction, label)
    assert health.auc() == 0.0
    for prediction, label in [(0.9, 1), (0.1, 0), (0.8, 1), (0.2, 0)]:
        health.observe(prediction, label)
    assert health.pairs == 4
    assert health.auc() == 1.0  # every wrong pair has left the window
    assert health.log_loss() == pytest.approx(
        (2 * log_loss_of(0.9, 1) + 2 * log_loss_of(0.8, 1)) / 4
    )


def test_model_health_rejects_what_is_not_a_prediction_and_a_label() -> None:
    health = ModelHealth()
    with pytest.raises(ValueError, match="label"):
        health.observe(0.5, 2)
    with pytest.raises(ValueError, match="probability"):
        health.observe(1.5, 1)
    with pytest.raises(ValueError, match="probability"):
        health.observe(math.nan, 1)
    with pytest.raises(ValueError, match="window"):
        ModelHealth(window=1)
    assert math.isnan(health.log_loss())
    assert math.isinf(log_loss_of(0.0, 1)) is False  # clipped, never infinite


def _calibrated_pair(rng: random.Random, accurate: bool) -> tuple[float, int]:
    label = rng.randint(0, 1)
    if accurate:
        prediction = rng.uniform(0.7, 0.95) if label else rng.uniform(0.05, 0.3)
    else:
        prediction = rng.uniform(0.05, 0.3) if label else rng.uniform(0.7, 0.95)
    return prediction, label


def test_adwin_raises_a_worse_drift_alarm_when_the_model_goes_bad() -> None:
    rng = random.Random(3)
    metrics = Metrics.create(CollectorRegistry(), health_window=500)
    directions = [metrics.label_learned(*_flip(_calibrated_pair(rng, True))) for _ in range(2000)]
    assert "worse" not in directions  # a steady, good model raises nothing
    directions = [metrics.label_learned(*_flip(_calibrated_pair(rng, False))) for _ in range(500)]
    assert "worse" in directions
    worse = _sample(metrics, "churnstream_model_drift_alarms_total", direction="worse")
    assert worse is not None
    assert worse >= 1.0
    auc = _sample(metrics, "churnstream_model_auc")
    assert auc is not None
    assert auc < 0.5


def _flip(pair: tuple[float, int]) -> tuple[int, float]:
    prediction, label = pair
    return label, prediction


def test_the_sensor_counts_records_a_batch_handler_takes_at_once() -> None:
    from faust.types import TP

    from streams.worker.web import MetricsSensor

    metrics = Metrics.create(CollectorRegistry())
    sensor = MetricsSensor(metrics)
    sensor.on_records_in(TP("t-orders", 2), 64, 1063)
    sensor.on_records_in(TP("t-orders", 2), 3, 1066)
    assert _sample(metrics, "churnstream_events_consumed_total", topic="t-orders") == 67.0
    assert sensor.read_offsets[("t-orders", 2)] == 1066, "the lag baseline"


def test_counting_steps_at_once_gives_the_series_one_by_one_does() -> None:
    rng = random.Random(5)
    one_by_one = Metrics.create(CollectorRegistry())
    at_once = Metrics.create(CollectorRegistry())
    steps = ObservedSteps()
    for _ in range(500):
        band = rng.choice(["LOW", "HIGH", "CRITICAL"])
        latency = rng.choice([None, -1.0, 0.0, rng.expovariate(20.0), 99.0, 1e9])
        one_by_one.observe_score(band, latency)
        steps.score(band, latency)
        change = (rng.choice([None, "LOW"]), rng.choice(["MEDIUM", "HIGH"]), rng.random() / 50)
        one_by_one.observe_risk_change(*change)
        steps.risk_change(*change)
    at_once.observe_steps(steps)
    assert steps.scores_by_band == {}, "counted, then cleared"
    assert steps.event_to_score_s == []

    def series(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
            for sample in family.samples
            if not sample.name.endswith("_created")
        }

    got, want = series(at_once), series(one_by_one)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key
