"""Quality of the streaming scores on real orders, next to simple references.

The development protocol of ``shared/data/README.md``: for each cutoff C the core sees only
events before C and scores every customer it has seen as of C; the label is 1 when the
customer places no order in ``[C, C + H)``. Results are reported on all customers and on
"active90" (an order in the 90 days before C). References are computed the same way:
days since last order, the BG/NBD prior alone, and an offline RFM logistic regression
fitted on earlier cutoffs whose label windows close before C.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from streams.core.events import Event, OrderEvent
from streams.core.features import prior_of
from streams.replay import ReplayEngine, ReplayOptions, options_from_settings, sorted_events
from streams.settings import Settings

DEV_CUTOFFS: tuple[datetime, ...] = (
    datetime(1997, 10, 1, tzinfo=UTC),
    datetime(1998, 1, 1, tzinfo=UTC),
)
# The protocol's hard stop: nothing after this instant is ever read.
DATA_END = datetime(1998, 4, 1, tzinfo=UTC)
ACTIVE_DAYS = 90
_COUNTED = frozenset({"placed", "paid", "delivered"})


@dataclass(frozen=True, slots=True)
class SliceResult:
    """Metrics of one method on one slice at one cutoff."""

    cutoff: datetime
    slice_name: str
    method: str
    customers: int
    churn_rate: float
    auc: float
    log_loss: float


def auc_roc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Return the area under the ROC curve (ties count one half).

    >>> auc_roc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    positives = float(y.sum())
    negatives = float(len(y) - positives)
    if positives == 0 or negatives == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=float)
    sorted_scores = s[order]
    # Average ranks over ties so the result does not depend on input order.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def log_loss(labels: Sequence[int], probabilities: Sequence[float]) -> float:
    """Return the mean negative log-likelihood of ``labels`` under ``probabilities``.

    >>> round(log_loss([1, 0], [0.5, 0.5]), 4)
    0.6931
    """
    y = np.asarray(labels, dtype=float)
    p = np.clip(np.asarray(probabilities, dtype=float), 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass(frozen=True, slots=True)
class _Rfm:
    days_since_last: float
    orders: int
    avg_value: float
    tenure_days: float
    last_order_age_days: float


def _rfm_at(orders: Sequence[OrderEvent], cutoff: datetime) -> dict[str, _Rfm]:
    by_customer: dict[str, list[OrderEvent]] = {}
    for order in orders:
        if order.event_time < cutoff and order.status in _COUNTED:
            by_customer.setdefault(order.customer_id, []).append(order)
    result = {}
    for customer_id, mine in by_customer.items():
        first = mine[0].event_time
        last = mine[-1].event_time
        result[customer_id] = _Rfm(
            days_since_last=(cutoff - last).total_seconds() / 86_400,
            orders=len(mine),
            avg_value=sum(o.amount for o in mine) / len(mine),
            tenure_days=(cutoff - first).total_seconds() / 86_400,
            last_order_age_days=(last - first).total_seconds() / 86_400,
        )
    return result


def _labels_at(orders: Sequence[OrderEvent], cutoff: datetime, horizon_days: float) -> set[str]:
    end = cutoff + timedelta(days=horizon_days)
    return {o.customer_id for o in orders if cutoff <= o.event_time < end and o.status in _COUNTED}


def _rfm_matrix(rows: Iterable[_Rfm]) -> np.ndarray:
    return np.array(
        [
            [
                math.log1p(r.days_since_last),
                math.log1p(r.orders),
                math.log1p(r.avg_value),
                math.log1p(r.tenure_days),
            ]
            for r in rows
        ]
    )


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> np.ndarray:
    """Return weights (intercept first) of an L2 logistic regression fitted by Newton steps."""
    design = np.hstack([np.ones((len(x), 1)), x])
    weights = np.zeros(design.shape[1])
    penalty = l2 * np.eye(design.shape[1])
    penalty[0, 0] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-design @ weights))
        gradient = design.T @ (p - y) / len(y) + penalty @ weights
        hessian = (design.T * (p * (1 - p))) @ design / len(y) + penalty
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return weights


def _predict_logistic(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    design = np.hstack([np.ones((len(x), 1)), x])
    result: np.ndarray = 1.0 / (1.0 + np.exp(-design @ weights))
    return result


def training_cutoffs(cutoff: datetime, horizon_days: float) -> list[datetime]:
    """Return the monthly earlier cutoffs whose label windows close before ``cutoff``."""
    found = []
    month = datetime(1997, 4, 1, tzinfo=UTC)
    while month + timedelta(days=horizon_days) <= cutoff:
        found.append(month)
        month = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
    return found


def evaluate(
    events: Iterable[Event],
    cutoffs: Sequence[datetime] = DEV_CUTOFFS,
    options: ReplayOptions | None = None,
) -> list[SliceResult]:
    """Return the metrics of the streaming scores and the references at every cutoff."""
    options = options if options is not None else ReplayOptions()
    horizon = options.config.horizon_days
    ordered = sorted_events(events, before=DATA_END)
    orders = [e for e in ordered if isinstance(e, OrderEvent)]
    results: list[SliceResult] = []
    for cutoff in cutoffs:
        engine = ReplayEngine(options)
        for event in ordered:
            if event.event_time >= cutoff:
                break
            engine.feed(event)
        scores = {s.customer_id: s.score for s in engine.final_scores(cutoff)}
        customer_ids = sorted(scores)
        priors = {
            c: prior_of(engine.states[c], cutoff.timestamp(), options.config) for c in customer_ids
        }
        retained = _labels_at(orders, cutoff, horizon)
        labels = np.array([0 if c in retained else 1 for c in customer_ids])
        rfm = _rfm_at(orders, cutoff)
        rows = [rfm.get(c) or _Rfm(1e4, 0, 0.0, 1e4, 0.0) for c in customer_ids]
        x_now = _rfm_matrix(rows)
        x_train_parts, y_train_parts = [], []
        for earlier in training_cutoffs(cutoff, horizon):
            earlier_rfm = _rfm_at(orders, earlier)
            earlier_retained = _labels_at(orders, earlier, horizon)
            ids = sorted(earlier_rfm)
            x_train_parts.append(_rfm_matrix(earlier_rfm[c] for c in ids))
            y_train_parts.append(np.array([0 if c in earlier_retained else 1 for c in ids]))
        x_train = np.vstack(x_train_parts)
        y_train = np.concatenate(y_train_parts)
        rfm_p = _predict_logistic(fit_logistic(x_train, y_train), x_now)
        days_p = _predict_logistic(fit_logistic(x_train[:, :1], y_train), x_now[:, :1])
        methods = {
            "streaming (core)": np.array([scores[c] for c in customer_ids]),
            "BG/NBD prior only": np.array([priors[c] for c in customer_ids]),
            "days since last order": days_p,
            "offline RFM LR": rfm_p,
        }
        active = np.array([r.days_since_last <= ACTIVE_DAYS for r in rows])
        for slice_name, mask in (("all", np.ones(len(rows), dtype=bool)), ("active90", active)):
            for method, predicted in methods.items():
                results.append(
                    SliceResult(
                        cutoff,
                        slice_name,
                        method,
                        int(mask.sum()),
                        float(labels[mask].mean()),
                        auc_roc(labels[mask].tolist(), predicted[mask].tolist()),
                        log_loss(labels[mask].tolist(), predicted[mask].tolist()),
                    )
                )
    return results


def format_table(results: Sequence[SliceResult]) -> str:
    """Return the results as a fixed-width text table, one row per cutoff, slice and method."""
    lines = [
        f"{'cutoff':<11} {'slice':<9} {'n':>5} {'churn':>6} {'method':<22} {'AUC':>6} "
        f"{'logloss':>8}"
    ]
    for r in results:
        lines.append(
            f"{r.cutoff.date().isoformat():<11} {r.slice_name:<9} {r.customers:>5} "
            f"{r.churn_rate:>6.3f} {r.method:<22} {r.auc:>6.3f} {r.log_loss:>8.4f}"
        )
    return "\n".join(lines)


def evaluate_file(events_path: str | Path, settings: Settings | ReplayOptions | None = None) -> str:
    """Return the quality table for the events file at ``events_path``.

    This is what ``churnstream evaluate --events FILE`` prints.
    """
    # Imported here so that the evaluation logic never needs file I/O.
    from streams.io.events_file import read_events

    return format_table(evaluate(read_events(events_path), options=_options(settings)))


def _options(settings: Settings | ReplayOptions | None) -> ReplayOptions:
    if isinstance(settings, ReplayOptions):
        return settings
    return options_from_settings(settings)
