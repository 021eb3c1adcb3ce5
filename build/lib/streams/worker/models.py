"""The scorer's current model and how signed snapshots reach it (no Faust inside).

Scorers only predict: :class:`ModelHolder` keeps the frozen model every score uses and swaps it
atomically when a verified snapshot arrives. A snapshot whose signature fails is refused and
counted; the scorer keeps the model it had.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from streams.core.model import ChurnModel, FrozenLinearModel, OnlineChurnModel, Trainer
from streams.core.snapshot import SnapshotRecord, load_snapshot, sign_snapshot
from streams.errors import DecodeError, ModelSignatureError
from streams.io.avro import AvroCodec

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ModelCounters:
    """What happened to snapshots, for metrics."""

    swaps: int = 0
    refused: int = 0
    undecodable: int = 0


class ModelHolder:
    """The model the scorers use right now, and the latest learnable copy for the trainer."""

    def __init__(self, secret: str, codec: AvroCodec) -> None:
        self._secret = secret
        self._codec = codec
        self.current: ChurnModel = FrozenLinearModel.prior_only()
        self.latest_learnable: OnlineChurnModel | None = None
        self.counters = ModelCounters()

    @property
    def version(self) -> str:
        """Return the version of the model scores use now."""
        return self.current.version

    def get(self) -> ChurnModel:
        """Return the model scores use now."""
        return self.current

    def offer(self, value: bytes) -> str:
        """Verify the encoded snapshot ``value`` and swap it in; return what happened.

        One of ``swapped``, ``stale`` (older than the model in use), ``refused`` (bad
        signature) or ``undecodable``.
        """
        try:
            _, record = self._codec.decode(value, expected="model_snapshot")
            snapshot = SnapshotRecord.from_record(record)
        except (DecodeError, KeyError, TypeError, ValueError) as exc:
            self.counters.undecodable += 1
            log.warning("ignoring an undecodable model snapshot: %s", exc)
            return "undecodable"
        try:
            model = load_snapshot(snapshot, self._secret)
        except ModelSignatureError as exc:
            self.counters.refused += 1
            log.error("%s", exc)
            return "refused"
        if (
            self.latest_learnable is not None
            and model.examples_learned < self.latest_learnable.examples_learned
        ):
            return "stale"  # an older snapshot replayed from the compacted topic
        self.latest_learnable = model
        self.current = model.freeze()  # one reference assignment: the swap is atomic
        self.counters.swaps += 1
        log.info("model %s in use (%d examples learned)", model.version, model.examples_learned)
        return "swapped"


class TrainerShell:
    """The trainer: learns examples, and says when to publish a signed snapshot."""

    def __init__(self, secret: str, codec: AvroCodec, snapshot_every: int) -> None:
        self._secret = secret
        self._codec = codec
        self._snapshot_every = snapshot_every
        self.trainer: Trainer | None = None
        # (label, prediction before learning it): the prequential pair for model health
        self.last: tuple[int, float] | None = None

    def start_from(self, model: OnlineChurnModel | None) -> None:
        """Continue training from ``model`` (the latest published snapshot) or from scratch."""
        self.trainer = Trainer(model, snapshot_every=self._snapshot_every)

    def learn(self, value: bytes, now: datetime) -> bytes | None:
        """Learn one encoded training example; return an encoded signed snapshot when due."""
        from streams.core.records import TrainingExample

        if self.trainer is None:
            self.start_from(None)
        assert self.trainer is not None
        _, record = self._codec.decode(value, expected="training_example")
        example = TrainingExample.from_record(record)
        self.last = (example.label, self.trainer.model.predict_proba(example.features))
        if not self.trainer.learn(example):
            return None
        snapshot = sign_snapshot(self.trainer.model, self._secret, now)
        self.trainer.mark_snapshot()
        return self._codec.encode("model_snapshot", snapshot.to_record())
