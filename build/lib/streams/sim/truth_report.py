"""``churnstream evaluate --truth``: the report of scores and uplift against the truth.

Sources: scores from a ``replay`` CSV (``--scores`` with ``--as-of``) or the ``churn-scores``
topic; orders from an events file or the ``orders`` topic; decisions from an interventions
file, the ``interventions`` topic, or else the truth's own record of what the shop received.
The measures are those of :mod:`streams.sim.truth_eval`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from streams.core.uplift import Decision
from streams.errors import ChurnstreamError
from streams.sim.truth import Truth, read_truth
from streams.sim.truth_eval import (
    LABELS,
    Order,
    ScoreRow,
    UpliftCheck,
    decisions_from_truth,
    score_quality,
    scores_from_csv,
    scores_from_kafka,
    uplift_against_truth,
)

if TYPE_CHECKING:
    from streams.settings import Settings


def _orders_from_kafka(settings: Settings, timeout_s: float) -> list[Order]:
    from streams.io.kafka_clients import iter_topic

    orders: list[Order] = []
    for item in iter_topic(settings, "orders", from_beginning=True, timeout_s=timeout_s):
        value = item.get("value")
        if isinstance(value, dict):
            when = datetime.fromisoformat(str(value["event_time"]))
            orders.append((str(value["customer_id"]), when.timestamp(), str(value["status"])))
    return orders


def _decisions_from_kafka(settings: Settings, timeout_s: float) -> list[Decision]:
    from streams.core.uplift import decision_from_record
    from streams.io.kafka_clients import iter_topic

    decisions: list[Decision] = []
    for item in iter_topic(settings, "interventions", from_beginning=True, timeout_s=timeout_s):
        value = item.get("value")
        decision = decision_from_record(value) if isinstance(value, dict) else None
        if decision is not None:
            decisions.append(decision)
    return decisions


def evaluate_truth(
    truth_path: Path,
    *,
    scores_csv: Path | None = None,
    as_of: datetime | None = None,
    events_file: Path | None = None,
    interventions_file: Path | None = None,
    settings: Settings | None = None,
    horizon_days: float = 90.0,
    window_days: float | None = None,
    timeout_s: float = 5.0,
) -> str:
    """Return the report of scores and uplift against the truth at ``truth_path``.

    Scores come from ``scores_csv`` (scored at ``as_of``) or, with ``settings``, from the
    ``churn-scores`` topic. Orders come from ``events_file`` or the ``orders`` topic;
    decisions from ``interventions_file``, the ``interventions`` topic, or else the truth's
    own record of what the shop received. ``window_days`` defaults to the truth's window.
    This is what ``churnstream evaluate --truth`` prints.
    """
    from streams.uplift_report import decisions_from_file, orders_from_events_file

    truth = read_truth(truth_path)
    window = truth.window_days if window_days is None else window_days
    scores: list[ScoreRow] | None = None
    if scores_csv is not None:
        if as_of is None:
            raise ChurnstreamError("--scores needs --as-of (the time the replay scored at)")
        scores = scores_from_csv(scores_csv, as_of)
    elif settings is not None:
        scores = scores_from_kafka(settings, timeout_s)
    orders: list[Order] | None = None
    if events_file is not None:
        orders = list(orders_from_events_file(events_file))
    elif settings is not None:
        orders = _orders_from_kafka(settings, timeout_s)
    if interventions_file is not None:
        decisions, source = list(decisions_from_file(interventions_file)), str(interventions_file)
    elif settings is not None:
        decisions, source = _decisions_from_kafka(settings, timeout_s), "the interventions topic"
    else:
        decisions, source = decisions_from_truth(truth), "the truth file"
    lines = [_truth_line(truth)]
    if scores is not None:
        lines += _score_section(truth, scores, horizon_days, orders)
    if orders is not None and decisions:
        checks = uplift_against_truth(truth, decisions, orders, window)
        lines += format_uplift_checks(checks, window, source, truth.window_days)
    elif orders is None:
        lines.append("uplift: skipped (give --events FILE or --broker for the orders)")
    else:
        lines.append(f"uplift: no intervention decisions in {source}")
    return "\n".join(lines) + "\n"


def _truth_line(truth: Truth) -> str:
    customers = truth.customers.values()
    gone = sum(1 for c in customers if c.gone)
    end = "open" if truth.end_ms is None else _day(truth.end_ms)
    return (
        f"truth: {len(truth.customers)} customers, {gone} dropped out at least once, "
        f"{len(truth.revived_by)} revived, {len(truth.interventions)} interventions; "
        f"complete up to {end}"
    )


def _day(when_ms: int) -> str:
    return datetime.fromtimestamp(when_ms / 1000, UTC).isoformat(timespec="minutes")


def _score_section(
    truth: Truth, scores: Sequence[ScoreRow], horizon_days: float, orders: list[Order] | None
) -> list[str]:
    labels = LABELS if orders is not None else LABELS[:2]
    results = [score_quality(truth, scores, label, horizon_days, orders) for label in labels]
    as_of = sorted({row.as_of_ms for row in scores})
    when = (
        "-" if not as_of else _day(as_of[0]) + ("" if len(as_of) == 1 else f" .. {_day(as_of[-1])}")
    )
    lines = [
        f"scores: {len(scores)} customers scored at {when}; H = {horizon_days:g} days; "
        "alert = band HIGH or CRITICAL",
        f"{'label':<22} {'n':>7} {'churned':>8} {'censored':>8} {'AUC':>6} {'Brier':>6} "
        f"{'ECE':>6} {'alerts':>7} {'precision':>9} {'recall':>7}",
    ]
    for result in results:
        lines.append(
            f"{result.label:<22} {result.customers:>7} {result.churned:>8} {result.censored:>8} "
            f"{result.auc:>6.3f} {result.brier:>6.3f} {result.calibration_error:>6.3f} "
            f"{result.alerts:>7} {_share(result.alert_precision):>9} "
            f"{_share(result.alert_recall):>7}"
        )
    for result in results:
        lines.append(f"reliability ({result.label}): score bin -> n, mean score, churn rate")
        lines.extend(
            f"  [{b.low:.1f}, {b.high:.1f})  {b.n:>7}  {b.mean_score:.3f}  {b.churn_rate:.3f}"
            for b in result.bins
        )
    return lines


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_uplift_checks(
    checks: Sequence[UpliftCheck], window_days: float, source: str, truth_window: float
) -> list[str]:
    """Return the uplift table: estimate and 95 % interval next to the true effect."""
    lines = [
        f"uplift within {window_days:g} days (decisions from {source}; the estimator of "
        "`churnstream report uplift`) vs the true effect (mean y1 - y0 of the same decisions)",
    ]
    if abs(window_days - truth_window) > 1e-9:
        lines.append(
            f"warning: the truth's potential outcomes are for {truth_window:g} days, "
            f"not {window_days:g}: the true effects below do not match the estimate's window"
        )
    lines.append(
        f"{'segment':<20} {'treated':>8} {'held_out':>8} {'estimate':>9} {'95 % CI':>19} "
        f"{'true':>8} {'n_true':>7} covered"
    )
    for check in checks:
        estimate = check.estimate
        ci = estimate.ci
        interval = "-" if ci is None else f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"
        uplift = "-" if estimate.uplift is None else f"{100 * estimate.uplift:+.1f} pp"
        true = "-" if check.true_effect is None else f"{100 * check.true_effect:+.1f} pp"
        covered = {None: "-", True: "yes", False: "NO"}[check.covered]
        lines.append(
            f"{estimate.segment:<20} {estimate.treated_n:>8} {estimate.control_n:>8} "
            f"{uplift:>9} {interval:>19} {true:>8} {check.truth_n:>7} {covered}"
        )
    pooled = checks[-1] if checks else None
    if pooled is not None:
        missing = pooled.estimate.treated_n + pooled.estimate.control_n - pooled.truth_n
        if missing > 0:
            lines.append(
                f"note: {missing} counted decisions have no truth (the shop never received "
                "them, e.g. decided after it stopped); the true effects cover the others only"
            )
    return lines
