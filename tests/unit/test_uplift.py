"""Uplift: outcome windows by event time, Newcombe interval coverage, report and gauges."""

from __future__ import annotations

import dataclasses
import doctest
import json
import math
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import streams.core.uplift
from streams.core.events import OrderEvent
from streams.core.uplift import (
    Decision,
    UpliftEstimate,
    UpliftTracker,
    decision_from_record,
    newcombe_interval,
    replay_outcomes,
)
from streams.errors import ChurnstreamError, EventsFileError, ValidationError
from streams.io.events_file import write_events
from streams.uplift_report import report_uplift
from streams.worker.uplift_gauges import UpliftGauges

DAY_S = 86_400.0
T0_S = datetime(2024, 3, 1, tzinfo=UTC).timestamp()


def _decision(customer: str, day: float, treated: bool = True, segment: str = "loyal") -> Decision:
    return Decision(f"d-{customer}-{day}", customer, segment, treated, T0_S + day * DAY_S)


def test_an_order_inside_the_window_counts_and_one_after_it_does_not() -> None:
    tracker = UpliftTracker(window_days=14)
    tracker.record_decision(_decision("a", 0))
    tracker.record_decision(_decision("b", 0))
    tracker.record_decision(_decision("c", 0, treated=False))
    tracker.record_order("a", T0_S + 13 * DAY_S)
    tracker.record_order("b", T0_S - DAY_S)  # before the decision: not an outcome
    tracker.record_order("c", T0_S + 3 * DAY_S, status="payment_failed")  # not a purchase
    assert tracker.pending == 2
    assert tracker.advance(T0_S + 14 * DAY_S) == 0  # an order exactly at the end still counts
    tracker.record_order("b", T0_S + 15 * DAY_S)  # too late: closes the window as not ordered
    assert tracker.advance(T0_S + 15 * DAY_S) == 1
    assert tracker.pending == 0
    assert tracker.counts == {"loyal": [2, 1, 1, 0]}


def test_one_open_window_per_customer_and_duplicates_count_once() -> None:
    tracker = UpliftTracker(window_days=14)
    first = _decision("a", 0)
    tracker.record_decision(first)
    tracker.record_decision(first)  # at-least-once redelivery
    tracker.record_decision(_decision("a", 3))  # inside the open window
    assert tracker.overlapping == 1
    tracker.record_decision(_decision("a", 20))  # after the window: closes it, opens a new one
    assert tracker.counts == {"loyal": [1, 0, 0, 0]}
    assert tracker.pending == 1


def test_estimates_per_segment_and_pooled() -> None:
    tracker = UpliftTracker()
    for segment, treated, ordered in [("a", True, True), ("a", False, False), ("b", True, False)]:
        tracker.add_outcome(segment, treated, ordered)
    by_segment = {estimate.segment: estimate for estimate in tracker.estimates()}
    assert by_segment["a"].uplift == 1.0
    assert by_segment["b"].uplift is None  # no held-out observations yet
    assert by_segment["b"].ci is None
    assert by_segment["all"] == UpliftEstimate("all", 2, 1, 1, 0)


def test_tracker_state_round_trips_through_json() -> None:
    tracker = UpliftTracker(window_days=7, cluster_by_customer=True)
    tracker.record_decision(_decision("a", 0))
    tracker.record_decision(_decision("b", 0, treated=False))
    tracker.record_order("a", T0_S + DAY_S)
    restored = UpliftTracker.from_dict(json.loads(json.dumps(tracker.to_dict())))
    assert restored.to_dict() == tracker.to_dict()
    restored.advance(T0_S + 8 * DAY_S)
    assert restored.counts == {"loyal": [1, 1, 1, 0]}
    with pytest.raises(ValidationError, match="version"):
        UpliftTracker.from_dict({"v": 2})


def test_decisions_from_records_sort_into_arms() -> None:
    record: dict[str, Any] = {
        "intervention_id": "i1",
        "customer_id": "c1",
        "segment": "loyal",
        "created_at": "2024-03-01T00:00:00Z",
        "suppressed_reason": None,
    }
    treated = decision_from_record(record)
    assert treated is not None
    assert treated.treated
    assert treated.decided_s == T0_S
    control = decision_from_record({**record, "suppressed_reason": "held_out"})
    assert control is not None
    assert not control.treated
    for reason in ("no_consent", "capped", "cooldown"):
        assert decision_from_record({**record, "suppressed_reason": reason}) is None
    with pytest.raises(ValidationError, match="created_at"):
        decision_from_record({**record, "created_at": "2024-03-01T00:00:00"})


def _trial(
    rng: random.Random, customers: int, p_treated: float, p_control: float
) -> tuple[list[Decision], list[tuple[str, float, str]]]:
    """Return decisions and orders with a known true uplift ``p_treated - p_control``."""
    decisions, orders = [], []
    for index in range(customers):
        customer = f"c{index}"
        treated = rng.random() >= 0.1  # the default 10 % holdout
        decided_s = T0_S + rng.uniform(0.0, 30.0) * DAY_S
        decisions.append(Decision(f"d{index}", customer, "loyal", treated, decided_s))
        if rng.random() < (p_treated if treated else p_control):
            orders.append((customer, decided_s + rng.uniform(0.01, 14.0) * DAY_S, "placed"))
        elif rng.random() < 0.5:
            # A later order or a failed payment must not count as an outcome.
            orders.append((customer, decided_s + rng.uniform(14.5, 40.0) * DAY_S, "placed"))
            orders.append((customer, decided_s + DAY_S, "payment_failed"))
    return decisions, orders


def test_interval_covers_a_known_true_effect() -> None:
    rng = random.Random(20240301)
    decisions, orders = _trial(rng, 4000, p_treated=0.30, p_control=0.22)
    tracker = replay_outcomes(decisions, orders, window_days=14, as_of_s=T0_S + 90 * DAY_S)
    estimate = tracker.estimates()[-1]
    assert estimate.treated_n + estimate.control_n == 4000
    assert estimate.ci is not None
    low, high = estimate.ci
    assert low < 0.08 < high
    assert low > 0.0  # and with 4000 decisions it is clearly positive


def test_interval_coverage_over_many_trials_is_near_95_percent() -> None:
    rng = random.Random(7)
    true_effect, trials, covered = 0.06, 300, 0
    for _ in range(trials):
        decisions, orders = _trial(rng, 1000, p_treated=0.26, p_control=0.20)
        tracker = replay_outcomes(decisions, orders, window_days=14, as_of_s=T0_S + 90 * DAY_S)
        ci = tracker.estimates()[-1].ci
        assert ci is not None
        covered += ci[0] <= true_effect <= ci[1]
    # Nominal 95 %; with 300 trials the standard error is about 1.3 points.
    assert 0.91 <= covered / trials <= 0.99


def _clustered_trial(rng: random.Random, customers: int, effect: float) -> UpliftTracker:
    """Return a tracker of customers with 4 decisions each and a strong customer-level
    propensity to order (so repeat outcomes of one customer are correlated)."""
    decisions, orders = [], []
    for index in range(customers):
        customer, treated = f"c{index}", rng.random() >= 0.2
        propensity = rng.choice((0.05, 0.6)) + (effect if treated else 0.0)
        for visit in range(4):
            decided_s = T0_S + visit * 20 * DAY_S
            decisions.append(Decision(f"d{index}-{visit}", customer, "loyal", treated, decided_s))
            if rng.random() < propensity:
                orders.append((customer, decided_s + DAY_S, "placed"))
    return replay_outcomes(decisions, orders, window_days=14, as_of_s=T0_S + 100 * DAY_S)


def test_repeat_decisions_of_a_customer_widen_the_interval_to_keep_coverage() -> None:
    rng = random.Random(11)
    trials, covered, covered_naive = 150, 0, 0
    for _ in range(trials):
        estimate = _clustered_trial(rng, 150, effect=0.1).estimates()[-1]
        assert estimate.ci is not None
        assert estimate.treated_design_effect > 1.5
        covered += estimate.ci[0] <= 0.1 <= estimate.ci[1]
        naive = dataclasses.replace(estimate, treated_design_effect=1.0, control_design_effect=1.0)
        assert naive.ci is not None
        covered_naive += naive.ci[0] <= 0.1 <= naive.ci[1]
    assert covered / trials >= 0.9
    assert covered_naive < covered  # ignoring the clustering would claim too much


def test_newcombe_interval_of_a_null_effect_straddles_zero() -> None:
    low, high = newcombe_interval(30, 100, 30, 100)
    assert low < 0.0 < high
    assert math.isclose(low, -high)


# --- report and gauges ------------------------------------------------------------------


def _write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    decisions, orders = _trial(random.Random(3), 400, p_treated=0.4, p_control=0.2)
    interventions = tmp_path / "interventions.jsonl"
    with interventions.open("w") as handle:
        for index, decision in enumerate(decisions):
            value = {
                "intervention_id": decision.decision_id,
                "customer_id": decision.customer_id,
                "segment": "loyal" if index % 2 else "early",
                "created_at": datetime.fromtimestamp(decision.decided_s, UTC).isoformat(),
                "suppressed_reason": None if decision.treated else "held_out",
            }
            # Alternate the `churnstream tail` form and bare records: both are accepted.
            line = {"key": decision.customer_id, "value": value} if index % 3 else value
            handle.write(json.dumps(line) + "\n")
        handle.write(json.dumps({**value, "suppressed_reason": "capped"}) + "\n")
    events = tmp_path / "events.jsonl"
    write_events(
        events,
        [
            OrderEvent(
                f"e{index}",
                customer,
                f"o{index}",
                datetime.fromtimestamp(order_s, UTC),
                20.0,
                "EUR",
                status=status,  # type: ignore[arg-type]  # statuses of the generator are valid
            )
            for index, (customer, order_s, status) in enumerate(orders)
        ],
    )
    return interventions, events


def test_report_from_files_prints_each_segment_with_an_interval(tmp_path: Path) -> None:
    interventions, events = _write_inputs(tmp_path)
    text = report_uplift(interventions_file=interventions, events_file=events, window_days=14)
    lines = text.splitlines()
    assert "Newcombe" in lines[0]
    rows = {line.split()[0]: line for line in lines[3:-1]}
    assert set(rows) == {"early", "loyal", "all"}
    assert "pp" in rows["all"]
    assert "[" in rows["all"]


def test_report_names_a_bad_line_and_missing_inputs(tmp_path: Path) -> None:
    interventions, events = _write_inputs(tmp_path)
    with interventions.open("a") as handle:
        handle.write('{"customer_id": "x"}\n')
    with pytest.raises(
        EventsFileError, match=r"interventions.jsonl:402: not an intervention: missing field"
    ):
        report_uplift(interventions_file=interventions, events_file=events)
    with pytest.raises(ChurnstreamError, match="--events"):
        report_uplift(interventions_file=interventions)
    with pytest.raises(ChurnstreamError, match="--broker"):
        report_uplift()


def test_gauges_expose_the_estimates() -> None:
    registry = CollectorRegistry()
    gauges = UpliftGauges.create(registry)
    tracker = UpliftTracker()
    for treated, ordered in [(True, True), (True, False), (False, False), (False, False)]:
        tracker.add_outcome("loyal", treated, ordered)
    tracker.record_decision(_decision("open", 0))
    gauges.update(tracker)
    assert registry.get_sample_value("churnstream_uplift_ratio", {"segment": "loyal"}) == 0.5
    lower = registry.get_sample_value("churnstream_uplift_ci_lower_ratio", {"segment": "all"})
    assert lower is not None
    assert lower < 0.5
    labels = {"segment": "loyal", "arm": "held_out"}
    assert registry.get_sample_value("churnstream_uplift_decisions", labels) == 2
    assert registry.get_sample_value("churnstream_uplift_open_windows") == 1


def test_doctests() -> None:
    assert doctest.testmod(streams.core.uplift).failed == 0
