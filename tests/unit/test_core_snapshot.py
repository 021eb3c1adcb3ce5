"""Signed model snapshots: round trip, and refusal of anything altered (before unpickling)."""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from streams.core.features import FEATURE_NAMES
from streams.core.model import OnlineChurnModel
from streams.core.snapshot import SnapshotRecord, load_snapshot, sign_snapshot
from streams.errors import ModelSignatureError

SECRET = b"s3cret"
CREATED = datetime(2024, 5, 1, 10, 30, 15, 123456, tzinfo=UTC)


def _trained() -> OnlineChurnModel:
    model = OnlineChurnModel()
    for i in range(40):
        model.learn({name: float((i * 7 + j) % 5) for j, name in enumerate(FEATURE_NAMES)}, i % 2)
    return model


def test_round_trip_gives_the_same_predictions() -> None:
    model = _trained()
    record = sign_snapshot(model, SECRET, CREATED, metrics={"auc": 0.8})
    loaded = load_snapshot(SnapshotRecord.from_record(record.to_record()), SECRET)
    features = dict.fromkeys(FEATURE_NAMES, 1.0)
    assert loaded.version == model.version == "m-40"
    assert loaded.predict_proba(features) == model.predict_proba(features)
    assert loaded.freeze().predict_proba(features) == pytest.approx(model.predict_proba(features))
    assert record.created_at == datetime(2024, 5, 1, 10, 30, 15, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: replace(r, payload=r.payload[:-1] + bytes([r.payload[-1] ^ 1])),
        lambda r: replace(r, model_version="m-999"),
        lambda r: replace(r, examples_learned=r.examples_learned + 1),
        lambda r: replace(r, metrics={"auc": 0.99}),
        lambda r: replace(r, feature_names=("x",)),
        lambda r: replace(r, signature="0" * 64),
    ],
)
def test_tampered_snapshot_is_refused(tamper: object) -> None:
    record = sign_snapshot(_trained(), SECRET, CREATED)
    with pytest.raises(ModelSignatureError):
        load_snapshot(tamper(record), SECRET)  # type: ignore[operator]  # parametrized lambdas


def test_wrong_or_empty_secret_is_refused() -> None:
    record = sign_snapshot(_trained(), SECRET, CREATED)
    with pytest.raises(ModelSignatureError):
        load_snapshot(record, b"other")
    with pytest.raises(ModelSignatureError):
        load_snapshot(record, b"")


class _Exploit:
    ran = False

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_Exploit._run, ())

    @staticmethod
    def _run() -> None:
        _Exploit.ran = True


def test_forged_payload_is_never_unpickled() -> None:
    record = sign_snapshot(_trained(), SECRET, CREATED)
    forged = replace(record, payload=pickle.dumps(_Exploit()))
    with pytest.raises(ModelSignatureError):
        load_snapshot(forged, SECRET)
    assert _Exploit.ran is False
