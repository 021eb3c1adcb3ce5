"""The per-event work of the naive design, shared by Faust (c) and Quix Streams (e).

Per record: decode the Avro value with the project's codec, read the customer's small JSON
state, update it, write it back (a changelog record per event), and score it with a river
pipeline (``StandardScaler | LogisticRegression``) through ``predict_proba_one``. No timers,
no outputs, no policy: the design churnstream's worker is measured against.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any, Final

from river import compose, linear_model, preprocessing

from streams.core.events import ClickEvent, Event, OrderEvent
from streams.io.avro import AvroCodec, default_codec

FEATURES: Final[tuple[str, ...]] = (
    "recency_days",
    "tenure_days",
    "orders",
    "spend",
    "clicks",
    "cart_adds",
    "failed_payments",
)
DAY_S: Final[float] = 86400.0


def update(state: dict[str, Any] | None, event: Event) -> dict[str, Any]:
    """Return the customer's state after ``event`` (a new dict; JSON-able values only)."""
    at_s = event.event_time.timestamp()
    if state is None:
        state = {"first_s": at_s, "last_s": at_s, "last_order_s": None, "orders": 0}
        state.update(spend=0.0, clicks=0, cart_adds=0, failed_payments=0)
    else:
        state = dict(state)
    state["last_s"] = max(state["last_s"], at_s)
    if isinstance(event, OrderEvent):
        if event.status == "payment_failed":
            state["failed_payments"] += 1
        elif event.status in {"placed", "paid"}:
            state["orders"] += 1
            state["spend"] += event.amount
            state["last_order_s"] = at_s
    elif isinstance(event, ClickEvent):
        state["clicks"] += 1
        if event.action == "add_to_cart":
            state["cart_adds"] += 1
    return state


def features(state: dict[str, Any]) -> dict[str, float]:
    """Return the model's features of ``state`` at the customer's last event."""
    last_order_s = state["last_order_s"]
    recency_s = state["last_s"] - (state["first_s"] if last_order_s is None else last_order_s)
    return {
        "recency_days": recency_s / DAY_S,
        "tenure_days": (state["last_s"] - state["first_s"]) / DAY_S,
        "orders": float(state["orders"]),
        "spend": float(state["spend"]),
        "clicks": float(state["clicks"]),
        "cart_adds": float(state["cart_adds"]),
        "failed_payments": float(state["failed_payments"]),
    }


def trained_model(examples: int = 500, seed: int = 1) -> compose.Pipeline:
    """Return the river pipeline after ``examples`` synthetic examples (non-trivial weights)."""
    rng = random.Random(seed)
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for _ in range(examples):
        x = {name: rng.expovariate(0.2) for name in FEATURES}
        model.learn_one(x, x["recency_days"] > 5.0 + x["orders"])
    return model


class NaiveScorer:
    """Decodes a record and scores a state; the table access is the framework's business."""

    def __init__(self, codec: AvroCodec | None = None) -> None:
        self.codec = codec or default_codec()
        self.model = trained_model()
        self.scores = 0
        self.score_sum = 0.0

    def decode(self, value: bytes, topic: str) -> Event:
        """Return the validated event in ``value`` from unprefixed input ``topic``."""
        return self.codec.decode_event(value, topic=topic, now=datetime.now(UTC))

    def score(self, state: dict[str, Any]) -> float:
        """Return P(churn) of ``state`` from the river pipeline."""
        proba = self.model.predict_proba_one(features(state))
        score = float(proba.get(True, 0.0))
        self.scores += 1
        self.score_sum += score
        return score
