"""Scores and uplift measured against the simulator's truth."""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.core.events import Event, OrderEvent
from streams.core.guardrails import holdout_position
from streams.errors import ChurnstreamError, EventsFileError
from streams.io.events_file import write_events
from streams.sim.customers import customer_id_of
from streams.sim.effects import EffectConfig
from streams.sim.emit import iso
from streams.sim.shop import Shop, SimConfig
from streams.sim.truth import CustomerTruth, Truth, TruthWriter, read_truth
from streams.sim.truth_eval import (
    ScoreRow,
    decisions_from_truth,
    score_quality,
    scores_from_csv,
    uplift_against_truth,
)
from streams.sim.truth_report import evaluate_truth

DAY_MS = 86_400_000
T0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)


def _customer(customer_id: str, *gone: tuple[int, int | None]) -> CustomerTruth:
    return CustomerTruth(customer_id, T0, {}, [[start, end] for start, end in gone])


def _truth(end_day: float, *customers: CustomerTruth) -> Truth:
    return Truth({}, {c.customer_id: c for c in customers}, {}, T0 + int(end_day * DAY_MS))


def test_labels_auc_brier_and_alerts_on_a_known_truth() -> None:
    day = DAY_MS
    truth = _truth(
        200,
        _customer("gone-early", (T0 + 10 * day, None)),
        _customer("gone-later", (T0 + 70 * day, None)),
        _customer("stays"),
        _customer("comes-back", (T0 + 20 * day, T0 + 40 * day)),
    )
    as_of = T0 + 50 * day
    scores = [
        ScoreRow("gone-early", 0.9, "CRITICAL", as_of),
        ScoreRow("gone-later", 0.7, "HIGH", as_of),
        ScoreRow("stays", 0.2, "LOW", as_of),
        ScoreRow("comes-back", 0.6, "MEDIUM", as_of),
        ScoreRow("stranger", 0.5, "MEDIUM", as_of),
    ]
    horizon = score_quality(truth, scores, "gone by t+H", horizon_days=30)
    assert (horizon.customers, horizon.churned, horizon.censored) == (4, 2, 1)
    assert horizon.auc == 1.0
    assert horizon.brier == pytest.approx((0.1**2 + 0.3**2 + 0.2**2 + 0.6**2) / 4)
    assert (horizon.alerts, horizon.alert_precision, horizon.alert_recall) == (2, 1.0, 1.0)
    now = score_quality(truth, scores, "gone at t", horizon_days=30)
    assert now.churned == 1  # only gone-early is gone at day 50; comes-back is back
    assert now.alert_precision == 0.5
    assert sum(b.n for b in now.bins) == now.customers


def test_alive_customers_past_the_end_of_the_truth_are_censored() -> None:
    truth = _truth(60, _customer("alive"), _customer("gone", (T0 + 55 * DAY_MS, None)))
    scores = [ScoreRow("alive", 0.3, "LOW", T0), ScoreRow("gone", 0.8, "HIGH", T0)]
    result = score_quality(truth, scores, "gone by t+H", horizon_days=90)
    assert (result.customers, result.churned, result.censored) == (1, 1, 1)
    assert math.isnan(result.auc)


def test_the_observed_label_needs_orders_in_the_horizon() -> None:
    truth = _truth(200, _customer("buyer"), _customer("quiet"), _customer("late"))
    as_of = T0 + 10 * DAY_MS
    orders = [
        ("buyer", (as_of + 5 * DAY_MS) / 1000, "placed"),
        ("quiet", (as_of + 5 * DAY_MS) / 1000, "payment_failed"),
        ("late", (as_of + 40 * DAY_MS) / 1000, "paid"),
    ]
    scores = [ScoreRow(c, 0.5, "MEDIUM", as_of) for c in ("buyer", "quiet", "late")]
    result = score_quality(truth, scores, "no order in [t, t+H)", 30, orders)
    assert (result.customers, result.churned) == (3, 2)
    with pytest.raises(ChurnstreamError, match="unknown label"):
        score_quality(truth, scores, "vibes", 30)


def test_scores_csv_rows_and_a_bad_row_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    path.write_text("customer_id,score,band,model_version\nc1,0.25,LOW,prior\nc2,oops,HIGH,x\n")
    with pytest.raises(EventsFileError, match=r"scores.csv:3"):
        scores_from_csv(path, datetime(2024, 5, 1, tzinfo=UTC))
    path.write_text("customer_id,score,band,model_version\nc1,0.25,LOW,prior\n")
    (row,) = scores_from_csv(path, datetime(2024, 5, 1, tzinfo=UTC))
    assert (row.customer_id, row.score, row.band) == ("c1", 0.25, "LOW")


def test_a_truth_line_that_is_not_a_record_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    path.write_text('{"type": "meta"}\n{"type": "weather"}\n')
    with pytest.raises(EventsFileError, match=r"truth.jsonl:2: .*weather"):
        read_truth(path)


def _intervention(index: int, at_ms: int, salt: str) -> dict[str, Any]:
    customer_id = customer_id_of(index)
    held_out = holdout_position(customer_id, salt) < 40
    return {
        "intervention_id": f"{salt}-{index}-{at_ms}",
        "customer_id": customer_id,
        "kind": "chat",
        "channel": "chat",
        "segment": "loyal" if index % 2 else "early",
        "reason": "test",
        "offer": None,
        "holdout": held_out,
        "suppressed_reason": "held_out" if held_out else None,
        "created_at": iso(at_ms),
        "expires_at": iso(at_ms + DAY_MS),
        "deliver_after": None,
        "risk_change_id": None,
        "trigger": "timer",
        "model_version": None,
    }


@pytest.fixture(scope="module")
def closed_loop(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[Event], list[dict[str, Any]], Path]:
    """Run a shop with a toy policy: every 10 days a quarter of the customers get a chat."""
    tmp_path = tmp_path_factory.mktemp("loop")
    effects = EffectConfig(respond={"loyal": 0.4, "early": 0.2})
    shop = Shop(SimConfig(customers=2000, days=130, seed=41, acquisition_days=30, effects=effects))
    events: list[Event] = []
    records: list[dict[str, Any]] = []
    for step in range(8):
        at_ms = shop.start_ms + (40 + 10 * step) * DAY_MS
        while (when := shop.peek_ms()) is not None and when < at_ms:
            event = shop.next_event()
            assert event is not None
            events.append(event)
        for index in sorted(shop.customers):
            if index % 4 == step % 4:
                record = _intervention(index, at_ms, "loop")
                records.append(record)
                shop.apply_intervention(record, at_ms)
    events.extend(shop)
    writer = TruthWriter(tmp_path / "truth.jsonl")
    writer.write(shop.drain_truth())
    writer.write([shop.end_record()])
    writer.close()
    return events, records, tmp_path / "truth.jsonl"


def test_the_estimated_uplift_is_next_to_the_true_effect_of_the_same_decisions(
    closed_loop: tuple[list[Event], list[dict[str, Any]], Path],
) -> None:
    events, _, truth_path = closed_loop
    truth = read_truth(truth_path)
    orders = [
        (e.customer_id, e.event_time.timestamp(), e.status)
        for e in events
        if isinstance(e, OrderEvent)
    ]
    decisions = decisions_from_truth(truth)
    checks = {c.estimate.segment: c for c in uplift_against_truth(truth, decisions, orders, 14)}
    assert set(checks) == {"early", "loyal", "all"}
    for check in checks.values():
        estimate = check.estimate
        assert check.truth_n == estimate.treated_n + estimate.control_n
        assert check.truth_n > 300
        assert check.true_effect is not None
        assert check.covered, check
    loyal, early = checks["loyal"].true_effect, checks["early"].true_effect
    assert loyal is not None
    assert early is not None
    assert loyal > early > 0


def test_evaluate_truth_reports_scores_and_uplift_from_files(
    closed_loop: tuple[list[Event], list[dict[str, Any]], Path], tmp_path: Path
) -> None:
    events, records, truth_path = closed_loop
    events_path = tmp_path / "events.jsonl"
    write_events(events_path, events)
    interventions_path = tmp_path / "interventions.jsonl"
    lines = (json.dumps({"key": r["customer_id"], "value": r}) + "\n" for r in records)
    interventions_path.write_text("".join(lines))
    truth = read_truth(truth_path)
    as_of = datetime(2024, 3, 1, tzinfo=UTC)
    as_of_ms = int(as_of.timestamp() * 1000)
    scores_path = tmp_path / "scores.csv"
    with scores_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("customer_id", "score", "band", "model_version"))
        for customer in truth.customers.values():
            gone = customer.dropped_at(as_of_ms)
            band = "HIGH" if gone else "LOW"
            writer.writerow((customer.customer_id, 0.9 if gone else 0.3, band, "m"))
    report = evaluate_truth(
        truth_path,
        scores_csv=scores_path,
        as_of=as_of,
        events_file=events_path,
        interventions_file=interventions_path,
        horizon_days=30,
    )
    assert "gone at t" in report
    gone_at_t = next(line for line in report.splitlines() if line.startswith("gone at t "))
    assert " 1.000 " in gone_at_t  # perfect AUC for a score that knows who is gone
    segments = ("early ", "loyal ", "all ")
    uplift_rows = [line for line in report.splitlines() if line.startswith(segments)]
    assert len(uplift_rows) == 3
    assert all(line.endswith("yes") for line in uplift_rows), report
    assert "have no truth" not in report
    # A decision the shop never received (day 20, before any of the policy's): the estimator
    # counts it, the truth cannot, and the report says so.
    stray = _intervention(3, T0 + 20 * DAY_MS, "stray")
    with interventions_path.open("a") as handle:
        handle.write(json.dumps(stray) + "\n")
    partial = evaluate_truth(
        truth_path, events_file=events_path, interventions_file=interventions_path
    )
    assert "note: 1 counted decisions have no truth" in partial
    with pytest.raises(ChurnstreamError, match="--as-of"):
        evaluate_truth(truth_path, scores_csv=scores_path)
    no_orders = evaluate_truth(truth_path)
    assert "uplift: skipped" in no_orders
