"""Rolling prequential model health: AUC and log-loss over recent labels, and drift alarms."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any, Final

_EPSILON: Final[float] = 1e-7


class ModelHealth:
    """Rolling prequential AUC and log-loss of the last ``window`` pairs, with ADWIN on the loss.

    Pure and in-process: :meth:`observe` is O(1) amortised (plus ADWIN's O(log n));
    :meth:`auc` sorts the window only when it is read and the window changed since.

    >>> health = ModelHealth(window=4)
    >>> for prediction, label in [(0.9, 1), (0.2, 0), (0.7, 1), (0.4, 0)]:
    ...     _ = health.observe(prediction, label)
    >>> health.auc(), round(health.log_loss(), 3)
    (1.0, 0.299)
    """

    def __init__(self, window: int = 1000, drift_delta: float = 0.002) -> None:
        if window < 2:
            msg = f"window must hold at least 2 pairs, got {window!r}"
            raise ValueError(msg)
        from river import drift  # lazy: river takes ~1 s to import, the CLI should not wait

        self.window = window
        self._pairs: deque[tuple[float, int]] = deque(maxlen=window)
        self._losses: deque[float] = deque(maxlen=window)
        self._detector: Any = drift.ADWIN(delta=drift_delta)  # type: ignore[no-untyped-call]  # river's constructors are unannotated
        self._version = 0
        self._auc_cache: tuple[int, float] = (-1, math.nan)
        self.alarms = 0

    @property
    def pairs(self) -> int:
        """Return how many (prediction, label) pairs the window holds now."""
        return len(self._pairs)

    def observe(self, prediction: float, label: int) -> str | None:
        """Add one prequential pair; return ``"worse"``/``"better"`` when ADWIN sees drift.

        The direction compares ADWIN's mean log-loss before and after it dropped the old
        part of its window: only ``"worse"`` should page anyone.
        """
        if label not in (0, 1):
            msg = f"label must be 0 or 1, got {label!r}"
            raise ValueError(msg)
        if not 0.0 <= prediction <= 1.0 or math.isnan(prediction):
            msg = f"prediction must be a probability in [0, 1], got {prediction!r}"
            raise ValueError(msg)
        loss = log_loss_of(prediction, label)
        self._pairs.append((prediction, label))
        self._losses.append(loss)
        self._version += 1
        mean_before = float(self._detector.estimation)
        self._detector.update(loss)
        if not self._detector.drift_detected:
            return None
        self.alarms += 1
        return "worse" if float(self._detector.estimation) > mean_before else "better"

    def auc(self) -> float:
        """Return the ROC AUC over the window (NaN until both labels are present)."""
        version, cached = self._auc_cache
        if version != self._version:
            cached = roc_auc(self._pairs)
            self._auc_cache = (self._version, cached)
        return cached

    def log_loss(self) -> float:
        """Return the mean log-loss over the window (NaN while it is empty)."""
        if not self._losses:
            return math.nan
        return math.fsum(self._losses) / len(self._losses)


def log_loss_of(prediction: float, label: int) -> float:
    """Return the log-loss of one probability ``prediction`` of label 1, clipped to stay finite.

    >>> round(log_loss_of(0.9, 1), 4), round(log_loss_of(0.9, 0), 4)
    (0.1054, 2.3026)
    """
    p = min(max(prediction, _EPSILON), 1.0 - _EPSILON)
    return -math.log(p) if label == 1 else -math.log(1.0 - p)


def roc_auc(pairs: Iterable[tuple[float, int]]) -> float:
    """Return the exact ROC AUC of (prediction, label) pairs; ties count half; NaN if one class.

    Mann-Whitney rank sum with average ranks for ties: O(n log n).

    >>> roc_auc([(0.1, 0), (0.4, 1), (0.35, 0), (0.8, 1)])
    1.0
    >>> roc_auc([(0.5, 0), (0.5, 1)])
    0.5
    """
    ordered = sorted(pairs, key=lambda pair: pair[0])
    positives = sum(label for _, label in ordered)
    negatives = len(ordered) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    rank_sum = 0.0
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1][0] == ordered[start][0]:
            end += 1
        average_rank = (start + end) / 2.0 + 1.0
        rank_sum += average_rank * sum(label for _, label in ordered[start : end + 1])
        start = end + 1
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)
