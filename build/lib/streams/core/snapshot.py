"""Signed model snapshots: pickle plus HMAC-SHA256, verified before anything is unpickled.

Unpickling runs code, so a snapshot from the models topic is only loaded when its signature
over payload *and* metadata verifies with the shared secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.core.features import FEATURE_NAMES
from streams.core.model import OnlineChurnModel
from streams.errors import ModelSignatureError


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """A ``model_snapshot`` record (docs/records.md)."""

    model_version: str
    created_at: datetime
    examples_learned: int
    algorithm: str
    feature_names: tuple[str, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    payload: bytes = b""
    signature: str = ""

    def to_record(self) -> dict[str, Any]:
        """Return the ``model_snapshot`` Avro record."""
        return {
            "model_version": self.model_version,
            "created_at": self.created_at,
            "examples_learned": self.examples_learned,
            "algorithm": self.algorithm,
            "feature_names": list(self.feature_names),
            "metrics": dict(self.metrics),
            "payload": self.payload,
            "signature": self.signature,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SnapshotRecord:
        """Return the snapshot a decoded ``model_snapshot`` record describes."""
        return cls(
            model_version=str(record["model_version"]),
            created_at=record["created_at"],
            examples_learned=int(record["examples_learned"]),
            algorithm=str(record["algorithm"]),
            feature_names=tuple(record["feature_names"]),
            metrics={str(k): float(v) for k, v in record["metrics"].items()},
            payload=bytes(record["payload"]),
            signature=str(record["signature"]),
        )


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        msg = "the model secret is empty. Operator action: set CHURNSTREAM_MODEL_SECRET"
        raise ModelSignatureError(msg)
    return key


def _signed_message(record: SnapshotRecord) -> bytes:
    # Milliseconds, not the datetime: the Avro timestamp-millis round trip must not break it.
    metadata = {
        "model_version": record.model_version,
        "created_at_ms": int(record.created_at.timestamp() * 1000),
        "examples_learned": record.examples_learned,
        "algorithm": record.algorithm,
        "feature_names": list(record.feature_names),
        "metrics": {k: float(v) for k, v in sorted(record.metrics.items())},
        "payload_sha256": hashlib.sha256(record.payload).hexdigest(),
    }
    return json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode()


def sign_snapshot(
    model: OnlineChurnModel,
    secret: str | bytes,
    created_at: datetime,
    metrics: Mapping[str, float] | None = None,
) -> SnapshotRecord:
    """Return a signed snapshot of ``model`` (``created_at`` is kept to the millisecond)."""
    millis = int(created_at.timestamp() * 1000)
    unsigned = SnapshotRecord(
        model_version=model.version,
        created_at=datetime.fromtimestamp(millis / 1000, tz=UTC),
        examples_learned=model.examples_learned,
        algorithm=model.algorithm,
        feature_names=FEATURE_NAMES,
        metrics=dict(metrics or {}),
        payload=pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL),
    )
    signature = hmac.new(_key(secret), _signed_message(unsigned), hashlib.sha256).hexdigest()
    return SnapshotRecord(**{**_fields(unsigned), "signature": signature})


def load_snapshot(record: SnapshotRecord, secret: str | bytes) -> OnlineChurnModel:
    """Return the model inside ``record``, or raise ``ModelSignatureError`` if it was altered."""
    expected = hmac.new(_key(secret), _signed_message(record), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, record.signature):
        msg = (
            f"model snapshot {record.model_version!r} has a bad signature: refusing to load it. "
            "Operator action: check that trainer and workers share CHURNSTREAM_MODEL_SECRET"
        )
        raise ModelSignatureError(msg)
    # Safe only because the HMAC above verified payload and metadata.
    model = pickle.loads(record.payload)
    if not isinstance(model, OnlineChurnModel) or model.version != record.model_version:
        raise ModelSignatureError(
            f"model snapshot {record.model_version!r} holds {type(model).__name__} "
            f"version {getattr(model, 'version', None)!r}"
        )
    return model


def _fields(record: SnapshotRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in SnapshotRecord.__slots__}
