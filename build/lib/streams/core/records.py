"""Output records of the core (scores, risk changes, training examples) as frozen values.

Each has ``to_record()`` returning the dict of its Avro record (docs/records.md): times are
aware UTC datetimes, bands are strings. Ids are deterministic so downstream can de-duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import blake2b
from typing import Any

SECONDS_PER_DAY = 86_400.0


def to_s(when: datetime) -> float:
    """Return an aware datetime as epoch seconds (the core's internal clock unit).

    >>> to_s(datetime(1970, 1, 2, tzinfo=UTC))
    86400.0
    """
    return when.timestamp()


def from_s(epoch_s: float) -> datetime:
    """Return epoch seconds as an aware UTC datetime, truncated to milliseconds.

    Truncating to milliseconds keeps records equal after an Avro ``timestamp-millis`` round trip.

    >>> from_s(86400.0).isoformat()
    '1970-01-02T00:00:00+00:00'
    """
    millis = int(epoch_s * 1000)
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


def stable_id(*parts: object) -> str:
    """Return a deterministic 32-hex-digit id of ``parts`` (same parts, same id, any process).

    >>> stable_id("a", 1) == stable_id("a", 1) != stable_id("a", 2)
    True
    """
    text = "\x1f".join(map(str, parts))
    return blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Reason:
    """One driver of a score in plain words; ``weight`` is how much it pushed the risk up."""

    code: str
    text: str
    weight: float

    def to_record(self) -> dict[str, Any]:
        """Return the ``Reason`` Avro record."""
        return {"code": self.code, "text": self.text, "weight": self.weight}


@dataclass(frozen=True, slots=True)
class ChurnScore:
    """The current P(churn within H) of one customer, with its band and reasons.

    ``reasons`` is a tuple, or (from the scoring step) a sequence equal to one that is worked
    out only when read: most scores are replaced by a later one before they are sent.
    """

    event_id: str
    customer_id: str
    score: float
    band: str
    reasons: Sequence[Reason]
    model_version: str
    as_of: datetime
    trigger: str

    def to_record(self) -> dict[str, Any]:
        """Return the ``churn_score`` Avro record."""
        return {
            "event_id": self.event_id,
            "customer_id": self.customer_id,
            "score": self.score,
            "band": self.band,
            "reasons": [reason.to_record() for reason in self.reasons],
            "model_version": self.model_version,
            "as_of": self.as_of,
            "trigger": self.trigger,
        }


@dataclass(frozen=True, slots=True)
class RiskChange:
    """A customer's risk band changed (``from_band`` is None for the first band)."""

    event_id: str
    customer_id: str
    from_band: str | None
    to_band: str
    score: float
    previous_score: float | None
    reasons: tuple[Reason, ...]
    model_version: str
    as_of: datetime
    trigger: str

    def to_record(self) -> dict[str, Any]:
        """Return the ``risk_change`` Avro record."""
        return {
            "event_id": self.event_id,
            "customer_id": self.customer_id,
            "from_band": self.from_band,
            "to_band": self.to_band,
            "score": self.score,
            "previous_score": self.previous_score,
            "reasons": [reason.to_record() for reason in self.reasons],
            "model_version": self.model_version,
            "as_of": self.as_of,
            "trigger": self.trigger,
        }


@dataclass(frozen=True, slots=True)
class TrainingExample:
    """A score snapshot whose truth is now known: label 1 = no order within H of the snapshot."""

    example_id: str
    customer_id: str
    snapshot_time: datetime
    label_time: datetime
    label: int
    features: dict[str, float]
    prior: float
    model_version: str

    def to_record(self) -> dict[str, Any]:
        """Return the ``training_example`` Avro record."""
        return {
            "example_id": self.example_id,
            "customer_id": self.customer_id,
            "snapshot_time": self.snapshot_time,
            "label_time": self.label_time,
            "label": self.label,
            "features": dict(self.features),
            "prior": self.prior,
            "model_version": self.model_version,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TrainingExample:
        """Return the example a ``training_example`` record describes (the trainer's input)."""
        return cls(
            example_id=str(record["example_id"]),
            customer_id=str(record["customer_id"]),
            snapshot_time=record["snapshot_time"].astimezone(UTC),
            label_time=record["label_time"].astimezone(UTC),
            label=int(record["label"]),
            features={str(k): float(v) for k, v in record["features"].items()},
            prior=float(record["prior"]),
            model_version=str(record["model_version"]),
        )
