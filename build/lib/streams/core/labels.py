"""Delayed labels: score snapshots become training examples exactly one horizon later.

Every snapshot resolves at ``snapshot + H`` whatever happened, with label 0 if an order came
in ``[snapshot, snapshot + H)`` and 1 otherwise. Resolving "retained" at the next purchase
but "churned" only H later would feed the online model bursts of one class at a time and
bias it badly; one fixed delay keeps the label stream in snapshot order.
"""

from __future__ import annotations

from streams.core.features import FEATURE_NAMES
from streams.core.records import TrainingExample, from_s, stable_id
from streams.core.state import CustomerState, PendingSnapshot


def take_snapshot(
    state: CustomerState,
    now_s: float,
    *,
    features: dict[str, float],
    prior: float,
    model_version: str,
    max_pending: int,
) -> bool:
    """Add a pending snapshot to ``state``; return False (and add nothing) when at the bound.

    >>> state = CustomerState("c1", 0.0, 0.0, 0.0)
    >>> feats = dict.fromkeys(FEATURE_NAMES, 0.0)
    >>> [take_snapshot(state, t, features=feats, prior=0.5, model_version="prior-0",
    ...               max_pending=2) for t in (1.0, 2.0, 3.0)]
    [True, True, False]
    """
    if len(state.pending) >= max_pending:
        return False
    values = [features[name] for name in FEATURE_NAMES]
    state.pending.append(PendingSnapshot(now_s, values, prior, model_version))
    return True


def mark_order(state: CustomerState, order_s: float, horizon_s: float) -> None:
    """Mark every pending snapshot whose label window holds ``order_s`` as retained."""
    for snapshot in state.pending:
        if snapshot.snapshot_s <= order_s < snapshot.snapshot_s + horizon_s:
            snapshot.retained = True


def next_resolution_s(state: CustomerState, horizon_s: float) -> float | None:
    """Return when the oldest pending snapshot resolves, or None if none is pending."""
    if not state.pending:
        return None
    return min(snapshot.snapshot_s for snapshot in state.pending) + horizon_s


def resolve_due(state: CustomerState, now_s: float, horizon_s: float) -> list[TrainingExample]:
    """Remove and return (as examples) the snapshots whose horizon ended by ``now_s``."""
    due: list[TrainingExample] = []
    keep: list[PendingSnapshot] = []
    for snapshot in state.pending:
        label_s = snapshot.snapshot_s + horizon_s
        if label_s > now_s:
            keep.append(snapshot)
            continue
        snapshot_ms = int(snapshot.snapshot_s * 1000)
        due.append(
            TrainingExample(
                example_id=stable_id("example", state.customer_id, snapshot_ms),
                customer_id=state.customer_id,
                snapshot_time=from_s(snapshot.snapshot_s),
                label_time=from_s(label_s),
                label=0 if snapshot.retained else 1,
                features=dict(zip(FEATURE_NAMES, snapshot.features, strict=True)),
                prior=snapshot.prior,
                model_version=snapshot.model_version,
            )
        )
    state.pending = keep
    return due
