"""Churn models behind one tiny interface, and the trainer that learns from labels.

Scorers only call ``predict_proba``; the :class:`Trainer` alone calls ``learn`` and hands out
versioned snapshots. A learned river pipeline is frozen into plain weights for scoring: the
same numbers at a fraction of the cost, plus per-feature contributions for the reasons.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from river import linear_model, optim, preprocessing

from streams.core.features import FEATURE_NAMES
from streams.core.prior import sigmoid
from streams.core.records import TrainingExample

PRIOR_VERSION = "prior-0"


@runtime_checkable
class ChurnModel(Protocol):
    """What the scoring step needs from a model."""

    @property
    def version(self) -> str:
        """Return a deterministic version string reported with every score."""
        ...

    @property
    def examples_learned(self) -> int:
        """Return how many labelled examples the model has learned (0 = prior only)."""
        ...

    def predict_proba(self, features: Mapping[str, float]) -> float:
        """Return P(churn within H) for ``features``."""
        ...

    def learn(self, features: Mapping[str, float], label: int) -> None:
        """Learn one labelled example (1 = churned)."""
        ...


class PriorOnlyModel:
    """The model before any label arrived: the cold-start prior carried in the features.

    >>> PriorOnlyModel().predict_proba({"prior_logit": 0.0})
    0.5
    """

    version = PRIOR_VERSION
    examples_learned = 0

    def predict_proba(self, features: Mapping[str, float]) -> float:
        """Return the prior P(churn) encoded in ``features["prior_logit"]``."""
        return sigmoid(features["prior_logit"])

    def learn(self, features: Mapping[str, float], label: int) -> None:
        """Refuse: scorers never learn; use a :class:`Trainer`."""
        raise TypeError("PriorOnlyModel does not learn; feed examples to a Trainer")

    def contributions(self, features: Mapping[str, float]) -> dict[str, float]:
        """Return the prior's logit as the one driver."""
        return {"prior_logit": features["prior_logit"]}


class OnlineChurnModel:
    """A river pipeline (standard scaler, then logistic regression) learning one at a time."""

    algorithm = "river:StandardScaler|LogisticRegression"

    def __init__(self, learning_rate: float = 0.05, l2: float = 1e-4) -> None:
        # AdaGrad: per-feature steps shrink as evidence accumulates, which on real orders
        # measured steadier than constant-step SGD (labels come in seasonal waves).
        self.pipeline = preprocessing.StandardScaler() | linear_model.LogisticRegression(
            optimizer=optim.AdaGrad(learning_rate), l2=l2, intercept_lr=0.01
        )
        self.examples_learned = 0

    @property
    def version(self) -> str:
        """Return ``prior-0`` before learning, then ``m-<examples learned>``."""
        return PRIOR_VERSION if self.examples_learned == 0 else f"m-{self.examples_learned}"

    def predict_proba(self, features: Mapping[str, float]) -> float:
        """Return P(churn) from the pipeline (the prior while nothing was learned)."""
        if self.examples_learned == 0:
            return sigmoid(features["prior_logit"])
        proba: dict[Any, float] = self.pipeline.predict_proba_one(dict(features))
        return float(proba.get(True, 0.0))

    def learn(self, features: Mapping[str, float], label: int) -> None:
        """Learn one example (1 = churned)."""
        self.pipeline.learn_one(dict(features), label == 1)
        self.examples_learned += 1

    def freeze(self) -> FrozenLinearModel:
        """Return the current weights as a fast, read-only scoring model."""
        if self.examples_learned == 0:
            return FrozenLinearModel.prior_only()
        scaler, regression = self.pipeline.steps.values()
        means = {name: float(scaler.means.get(name, 0.0)) for name in FEATURE_NAMES}
        scales = {}
        for name in FEATURE_NAMES:
            variance = float(scaler.vars.get(name, 0.0))
            scales[name] = 1.0 / math.sqrt(variance) if variance > 0 else 0.0
        weights = {name: float(regression.weights.get(name, 0.0)) for name in FEATURE_NAMES}
        return FrozenLinearModel(
            self.version,
            self.examples_learned,
            means=means,
            scales=scales,
            weights=weights,
            intercept=float(regression.intercept),
        )


class FrozenLinearModel:
    """Read-only standardised logistic regression: ``sigmoid(b + sum w * (x - mean) * scale)``."""

    __slots__ = ("_terms", "examples_learned", "intercept", "version")

    def __init__(
        self,
        version: str,
        examples_learned: int,
        *,
        means: Mapping[str, float],
        scales: Mapping[str, float],
        weights: Mapping[str, float],
        intercept: float,
    ) -> None:
        self.version = version
        self.examples_learned = examples_learned
        self.intercept = intercept
        # Pre-multiplied (name, mean, weight * scale) triples: one multiply-add per feature.
        self._terms = tuple(
            (name, means[name], weights[name] * scales[name]) for name in FEATURE_NAMES
        )

    @classmethod
    def prior_only(cls) -> FrozenLinearModel:
        """Return a model equal to the prior: weight 1 on its logit, nothing else."""
        zeros = dict.fromkeys(FEATURE_NAMES, 0.0)
        ones = dict.fromkeys(FEATURE_NAMES, 1.0)
        weights = {**zeros, "prior_logit": 1.0}
        return cls(PRIOR_VERSION, 0, means=zeros, scales=ones, weights=weights, intercept=0.0)

    def predict_proba(self, features: Mapping[str, float]) -> float:
        """Return P(churn) for ``features``."""
        total = self.intercept
        for name, mean, coefficient in self._terms:
            total += coefficient * (features[name] - mean)
        return sigmoid(total)

    def contributions(self, features: Mapping[str, float]) -> dict[str, float]:
        """Return each feature's push on the log-odds relative to the average customer."""
        return {
            name: coefficient * (features[name] - mean) for name, mean, coefficient in self._terms
        }

    def learn(self, features: Mapping[str, float], label: int) -> None:
        """Refuse: scorers never learn; use a :class:`Trainer`."""
        raise TypeError("a frozen scoring model does not learn; feed examples to a Trainer")


class Trainer:
    """Learns training examples in arrival order and says when a new snapshot is due."""

    def __init__(self, model: OnlineChurnModel | None = None, snapshot_every: int = 500) -> None:
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be at least 1, got {snapshot_every!r}")
        self.model = model if model is not None else OnlineChurnModel()
        self.snapshot_every = snapshot_every
        self._learned_at_last_snapshot = self.model.examples_learned

    def learn(self, example: TrainingExample) -> bool:
        """Learn ``example``; return whether a snapshot is now due (every N examples)."""
        self.model.learn(example.features, example.label)
        return self.snapshot_due()

    def snapshot_due(self) -> bool:
        """Return whether ``snapshot_every`` examples were learned since the last snapshot."""
        return self.model.examples_learned - self._learned_at_last_snapshot >= self.snapshot_every

    def mark_snapshot(self) -> None:
        """Record that a snapshot of the current model was published."""
        self._learned_at_last_snapshot = self.model.examples_learned
