"""Scores and uplift measured against the simulator's truth (the numbers; the report is in
:mod:`streams.sim.truth_report`).

Scores (a ``replay`` CSV with its ``--as-of``, or the latest ``churn-scores`` record of each
customer) are checked against three labels, each at the score's as-of time ``t``:

- ``gone by t+H``: the customer had truly dropped out (and not come back) at ``t + H``,
  the latent churn a retention team cares about. Alive customers whose ``t + H`` lies past
  the end of the truth are censored (left out); dropped ones count as churned.
- ``gone at t``: already dropped out at ``t``; the silence the timers must notice.
- ``no order in [t, t+H)``: what the model is trained on (needs the orders).

Each gets AUC, Brier score, a reliability table and precision / recall of HIGH+ bands.
The uplift that ``churnstream report uplift`` estimates (same estimator, same decisions and
orders) is shown per segment next to the true effect: the mean of ``y1 - y0`` over exactly
the decisions the estimator counted, and whether the 95 % interval covers it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from streams.core.uplift import (
    ALL_SEGMENTS,
    Decision,
    UpliftEstimate,
    UpliftTracker,
    replay_outcomes,
)
from streams.errors import ChurnstreamError, EventsFileError
from streams.sim.truth import Truth

if TYPE_CHECKING:
    from streams.settings import Settings

DAY_MS = 86_400_000
ALERT_BANDS = frozenset({"HIGH", "CRITICAL"})
PURCHASES = frozenset({"placed", "paid"})
Order = tuple[str, float, str]  # (customer_id, epoch seconds, status), as uplift_report reads


@dataclass(frozen=True, slots=True)
class ScoreRow:
    """One customer's score at ``as_of_ms``."""

    customer_id: str
    score: float
    band: str
    as_of_ms: int


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """Scores in ``[low, high)``: how many, their mean, and the share truly churned."""

    low: float
    high: float
    n: int
    mean_score: float
    churn_rate: float


@dataclass(frozen=True, slots=True)
class ScoreQuality:
    """How well scores rank and estimate one label."""

    label: str
    customers: int
    churned: int
    censored: int
    auc: float
    brier: float
    calibration_error: float
    alerts: int
    alert_precision: float | None
    alert_recall: float | None
    bins: tuple[ReliabilityBin, ...]


@dataclass(frozen=True, slots=True)
class UpliftCheck:
    """The estimated uplift of a segment next to its true effect."""

    estimate: UpliftEstimate
    true_effect: float | None
    truth_n: int

    @property
    def covered(self) -> bool | None:
        """Return whether the 95 % interval covers the true effect (None: nothing to say)."""
        ci = self.estimate.ci
        if ci is None or self.true_effect is None:
            return None
        return ci[0] - 1e-12 <= self.true_effect <= ci[1] + 1e-12


def scores_from_csv(path: str | Path, as_of: datetime) -> list[ScoreRow]:
    """Return the rows of a ``churnstream replay`` CSV, all scored at ``as_of``."""
    as_of_ms = int(as_of.timestamp() * 1000)
    rows: list[ScoreRow] = []
    try:
        with Path(path).open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.DictReader(handle), 2):
                try:
                    rows.append(
                        ScoreRow(row["customer_id"], float(row["score"]), row["band"], as_of_ms)
                    )
                except (KeyError, TypeError, ValueError) as exc:
                    msg = f"not a scores row (customer_id,score,band,...): {exc}"
                    raise EventsFileError(msg, str(path), number) from exc
    except OSError as exc:
        raise EventsFileError(f"cannot read scores: {exc.strerror or exc}", str(path), 0) from exc
    return rows


def scores_from_kafka(settings: Settings, timeout_s: float = 5.0) -> list[ScoreRow]:
    """Return each customer's latest score on the ``churn-scores`` topic."""
    from streams.io.kafka_clients import iter_topic

    latest: dict[str, ScoreRow] = {}
    for item in iter_topic(settings, "churn-scores", from_beginning=True, timeout_s=timeout_s):
        value = item.get("value")
        if not isinstance(value, dict):
            continue
        as_of = datetime.fromisoformat(str(value["as_of"]))
        row = ScoreRow(
            str(value["customer_id"]),
            float(value["score"]),
            str(value["band"]),
            int(as_of.timestamp() * 1000),
        )
        current = latest.get(row.customer_id)
        if current is None or current.as_of_ms <= row.as_of_ms:
            latest[row.customer_id] = row
    return list(latest.values())


def _labels(
    truth: Truth,
    scores: Sequence[ScoreRow],
    label: str,
    horizon_ms: int,
    purchases: dict[str, list[int]] | None,
) -> tuple[list[tuple[ScoreRow, int]], int]:
    end_ms = truth.end_ms
    known: list[tuple[ScoreRow, int]] = []
    censored = 0
    for row in scores:
        customer = truth.customers.get(row.customer_id)
        if customer is None:
            censored += 1
            continue
        if label == "gone at t":
            known.append((row, int(customer.dropped_at(row.as_of_ms))))
            continue
        horizon_end = row.as_of_ms + horizon_ms
        if label == "gone by t+H":
            if end_ms is None or horizon_end <= end_ms:
                known.append((row, int(customer.dropped_at(horizon_end))))
            elif customer.dropped_at(end_ms):
                known.append((row, 1))
            else:
                censored += 1
            continue
        times = (purchases or {}).get(row.customer_id, [])
        ordered = any(row.as_of_ms <= when < horizon_end for when in times)
        if ordered or (end_ms is not None and horizon_end <= end_ms):
            known.append((row, 0 if ordered else 1))
        else:
            censored += 1
    return known, censored


def score_quality(
    truth: Truth,
    scores: Sequence[ScoreRow],
    label: str,
    horizon_days: float,
    orders: Iterable[Order] | None = None,
    bins: int = 10,
) -> ScoreQuality:
    """Return AUC, Brier score, reliability and HIGH+ precision/recall for one ``label``.

    ``label`` is ``gone by t+H``, ``gone at t`` or ``no order in [t, t+H)`` (which needs
    ``orders``). Raises ``ChurnstreamError`` for an unknown label.
    """
    from streams.evaluate import auc_roc

    if label not in LABELS:
        raise ChurnstreamError(f"unknown label {label!r}; one of {LABELS}")
    purchases: dict[str, list[int]] | None = None
    if orders is not None:
        purchases = {}
        for customer_id, when_s, status in orders:
            if status in PURCHASES:
                purchases.setdefault(customer_id, []).append(round(when_s * 1000))
    known, censored = _labels(truth, scores, label, int(horizon_days * DAY_MS), purchases)
    labels = [y for _, y in known]
    values = [min(1.0, max(0.0, row.score)) for row, _ in known]
    churned = sum(labels)
    alerts = [y for row, y in known if row.band in ALERT_BANDS]
    table = _reliability(values, labels, bins)
    total = len(known)
    return ScoreQuality(
        label=label,
        customers=total,
        churned=churned,
        censored=censored,
        auc=auc_roc(labels, values) if total else math.nan,
        brier=sum((p - y) ** 2 for p, y in zip(values, labels, strict=True)) / total
        if total
        else math.nan,
        calibration_error=sum(b.n * abs(b.mean_score - b.churn_rate) for b in table) / total
        if total
        else math.nan,
        alerts=len(alerts),
        alert_precision=sum(alerts) / len(alerts) if alerts else None,
        alert_recall=sum(alerts) / churned if churned else None,
        bins=table,
    )


LABELS = ("gone by t+H", "gone at t", "no order in [t, t+H)")


def _reliability(
    values: Sequence[float], labels: Sequence[int], bins: int
) -> tuple[ReliabilityBin, ...]:
    sums = [[0, 0.0, 0] for _ in range(bins)]
    for value, label in zip(values, labels, strict=True):
        slot = sums[min(int(value * bins), bins - 1)]
        slot[0] += 1
        slot[1] += value
        slot[2] += label
    return tuple(
        ReliabilityBin(i / bins, (i + 1) / bins, int(n), float(total) / n, float(y) / n)
        for i, (n, total, y) in enumerate(sums)
        if n
    )


class _CountingTracker(UpliftTracker):
    """An uplift tracker that also remembers which decisions it resolved."""

    def __init__(self, window_days: float) -> None:
        super().__init__(window_days, cluster_by_customer=True)
        self.resolved: list[tuple[str, str]] = []

    def _resolve(self, customer_id: str, ordered: bool) -> None:
        window = self.windows[customer_id]
        self.resolved.append((window.decision_id, window.segment))
        super()._resolve(customer_id, ordered)


def _counted_decisions(
    decisions: Sequence[Decision], orders: Sequence[Order], window_days: float
) -> list[tuple[str, str]]:
    """Return ``(decision id, segment)`` of every decision whose outcome the estimator counts.

    The same walk as :func:`streams.core.uplift.replay_outcomes`, remembering ids.
    """
    tracker = _CountingTracker(window_days)
    timeline: list[tuple[float, int, Decision | Order]] = []
    seen: set[str] = set()
    for decision in decisions:
        if decision.decision_id not in seen:
            seen.add(decision.decision_id)
            timeline.append((decision.decided_s, 0, decision))
    timeline.extend((order[1], 1, order) for order in orders)
    timeline.sort(key=lambda item: (item[0], item[1]))
    for when_s, _, item in timeline:
        tracker.advance(when_s)
        if isinstance(item, Decision):
            tracker.record_decision(item)
        else:
            tracker.record_order(*item)
    tracker.advance(timeline[-1][0] if timeline else 0.0)
    return tracker.resolved


def uplift_against_truth(
    truth: Truth, decisions: Sequence[Decision], orders: Sequence[Order], window_days: float
) -> list[UpliftCheck]:
    """Return the estimate of ``report uplift`` per segment (and ``all``) with its true effect."""
    tracker = replay_outcomes(decisions, orders, window_days)
    effects: dict[str, list[int]] = {}
    for decision_id, segment in _counted_decisions(decisions, orders, window_days):
        item = truth.interventions.get(decision_id)
        effect = None if item is None else item.effect
        if effect is not None:
            effects.setdefault(segment, []).append(effect)
            effects.setdefault(ALL_SEGMENTS, []).append(effect)
    checks = []
    for estimate in tracker.estimates():
        values = effects.get(estimate.segment, [])
        true_effect = sum(values) / len(values) if values else None
        checks.append(UpliftCheck(estimate, true_effect, len(values)))
    return checks


def decisions_from_truth(truth: Truth) -> list[Decision]:
    """Return the decisions recorded in the truth (every record the shop received)."""
    return [
        Decision(
            item.intervention_id,
            item.customer_id,
            item.segment,
            item.arm == "treated",
            item.created_ms / 1000,
        )
        for item in truth.interventions.values()
        if item.arm in ("treated", "held_out")
    ]
