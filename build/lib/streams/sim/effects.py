"""The true effect of interventions on simulated customers, and how an intervention is read.

What an intervention *does* is set here, not learned: per segment and channel a probability
that a delivered contact makes the customer act on it (order soon; a dropped-out customer
comes back). On top of that, customers differ: some ignore every offer, and each tolerates
only so many contacts a month, past which a contact backfires (an opt-out of the channel and
a push towards leaving). Every draw is keyed by the intervention id, so the same record
always has the same effect, whichever arm it lands in and whenever it is applied.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from streams.errors import SettingsError, ValidationError
from streams.sim.rng import unit_hash

DAY_MS: Final[int] = 86_400_000
CHANNELS: Final[tuple[str, ...]] = ("chat", "email", "sms", "push")
# Probability that a contact on the customer's best channel makes them act, by segment
# (docs/interventions.md). A human on live chat and a failed-payment nudge work best.
DEFAULT_RESPOND: Final[Mapping[str, float]] = {
    "high_value_at_risk": 0.35,
    "never_ordered": 0.15,
    "low_value_early": 0.2,
    "early": 0.15,
    "loyal": 0.25,
    "payment_recovery": 0.4,
    "cancellation": 0.2,
    "service_recovery": 0.2,
}
DEFAULT_CHANNEL_FACTOR: Final[Mapping[str, float]] = {
    "chat": 1.0,
    "sms": 0.8,
    "email": 0.6,
    "push": 0.5,
}


@dataclass(frozen=True, slots=True)
class EffectConfig:
    """The true effects: response probability per segment (and channel), and backfire rules.

    ``respond`` maps ``segment`` or ``segment:channel`` (which wins) to a probability;
    ``channel_factor`` scales the segment's probability by channel; ``default_respond``
    covers segments not listed.
    """

    respond: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_RESPOND))
    channel_factor: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_CHANNEL_FACTOR)
    )
    default_respond: float = 0.1
    # Share of customers an offer never moves (they respond to chats and messages only).
    offer_immune_share: float = 0.3
    # A contact past the customer's monthly tolerance backfires: this share opt out of the
    # channel, and every backfire adds this much to the log-odds of leaving at the next check.
    backfire_opt_out_share: float = 0.5
    backfire_logit: float = 1.5
    # A response makes the customer come back within this many days of the delivery.
    response_days: tuple[float, float] = (0.05, 4.0)
    # A customer who responded is less likely to leave at their next check (log-odds).
    retained_logit: float = 1.5
    revive: bool = True

    def __post_init__(self) -> None:
        for key, value in (*self.respond.items(), *self.channel_factor.items()):
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise SettingsError(
                    f"effect {key!r} must be a probability in [0, 1], got {value!r}"
                )
        for name in ("default_respond", "offer_immune_share", "backfire_opt_out_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SettingsError(f"effect {name} must be in [0, 1], got {value!r}")
        low, high = self.response_days
        if not 0.0 <= low <= high <= 13.0:
            raise SettingsError(f"response_days must be 0 <= low <= high <= 13, got {low}, {high}")

    def respond_p(self, segment: str, channel: str | None) -> float:
        """Return P(respond) to a delivered contact of ``segment`` on ``channel``.

        >>> EffectConfig().respond_p("loyal", "email")
        0.15
        """
        if channel is not None and f"{segment}:{channel}" in self.respond:
            return float(self.respond[f"{segment}:{channel}"])
        base = float(self.respond.get(segment, self.default_respond))
        factor = 1.0 if channel is None else float(self.channel_factor.get(channel, 1.0))
        return round(base * factor, 10)

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as JSON-ready values (written into the truth file)."""
        return {
            "respond": dict(self.respond),
            "channel_factor": dict(self.channel_factor),
            "default_respond": self.default_respond,
            "offer_immune_share": self.offer_immune_share,
            "backfire_opt_out_share": self.backfire_opt_out_share,
            "backfire_logit": self.backfire_logit,
            "response_days": list(self.response_days),
            "retained_logit": self.retained_logit,
            "revive": self.revive,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> EffectConfig:
        """Return the configuration in ``raw`` (keys of :meth:`to_dict`, all optional)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise SettingsError(
                f"unknown effect setting(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        values = dict(raw)
        if "respond" in values:
            values["respond"] = {**DEFAULT_RESPOND, **values["respond"]}
        if "channel_factor" in values:
            values["channel_factor"] = {**DEFAULT_CHANNEL_FACTOR, **values["channel_factor"]}
        if "response_days" in values:
            low, high = values["response_days"]
            values["response_days"] = (float(low), float(high))
        try:
            return cls(**values)
        except TypeError as exc:
            raise SettingsError(f"bad effect settings {raw!r}: {exc}") from exc

    @classmethod
    def from_file(cls, path: str | Path) -> EffectConfig:
        """Return the configuration in the JSON file at ``path``."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SettingsError(f"--effects {str(path)!r}: cannot read JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise SettingsError(f"--effects {str(path)!r}: expected a JSON object")
        return cls.from_dict(raw)


@dataclass(frozen=True, slots=True)
class InterventionNotice:
    """What the simulator reads of an ``intervention`` record (times in epoch ms)."""

    intervention_id: str
    customer_id: str
    kind: str
    channel: str | None
    segment: str
    holdout: bool
    suppressed_reason: str | None
    created_ms: int
    expires_ms: int
    deliver_after_ms: int | None

    @property
    def arm(self) -> str:
        """Return ``treated`` (delivered or deferred), ``held_out`` or ``suppressed``."""
        if self.suppressed_reason is None:
            return "treated"
        if self.suppressed_reason == "held_out":
            return "held_out"
        return "suppressed"


def _ms(value: Any, field_name: str, record_id: object) -> int:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            msg = f"intervention {record_id!r}: {field_name} is not ISO-8601: {value!r}"
            raise ValidationError(msg, field=field_name) from exc
    if not isinstance(value, datetime) or value.tzinfo is None:
        msg = f"intervention {record_id!r}: {field_name} must be an aware time, got {value!r}"
        raise ValidationError(msg, field=field_name)
    return int(value.astimezone(UTC).timestamp() * 1000)


def notice_from_record(record: Mapping[str, Any]) -> InterventionNotice:
    """Return the notice of an ``intervention`` record (Avro-decoded or JSON form).

    Raises ``ValidationError`` naming the field that is missing or malformed.
    """
    record_id = record.get("intervention_id")
    for name in ("intervention_id", "customer_id", "kind", "segment", "created_at", "expires_at"):
        if record.get(name) is None:
            raise ValidationError(f"intervention {record_id!r}: missing {name}", field=name)
    deliver_after = record.get("deliver_after")
    channel = record.get("channel")
    return InterventionNotice(
        intervention_id=str(record_id),
        customer_id=str(record["customer_id"]),
        kind=str(record["kind"]),
        channel=None if channel is None else str(channel),
        segment=str(record["segment"]),
        holdout=bool(record.get("holdout", False)),
        suppressed_reason=record.get("suppressed_reason"),
        created_ms=_ms(record["created_at"], "created_at", record_id),
        expires_ms=_ms(record["expires_at"], "expires_at", record_id),
        deliver_after_ms=(
            None if deliver_after is None else _ms(deliver_after, "deliver_after", record_id)
        ),
    )


@dataclass(frozen=True, slots=True)
class EffectPlan:
    """What one delivered contact does to its customer (drawn once, from the id)."""

    respond_p: float
    responds: bool
    backfires: bool
    opts_out: bool
    response_delay_ms: int


def plan_effect(
    config: EffectConfig,
    seed: int,
    notice: InterventionNotice,
    offer_immune: bool,
    recent_contacts: int,
    contact_tolerance: int,
) -> EffectPlan:
    """Return the effect of delivering ``notice`` to a customer with these traits.

    ``recent_contacts`` counts delivered contacts in the 30 days before this one. Draws are
    keyed by ``(seed, intervention id)``, so both arms of the comparison see the same coin.
    """
    key = notice.intervention_id
    respond_p = config.respond_p(notice.segment, notice.channel)
    backfires = recent_contacts + 1 > contact_tolerance
    moved = not (offer_immune and notice.kind == "offer")
    responds = moved and not backfires and unit_hash(seed, key, "respond") < respond_p
    opts_out = backfires and unit_hash(seed, key, "opt-out") < config.backfire_opt_out_share
    low, high = config.response_days
    delay_days = low + (high - low) * unit_hash(seed, key, "delay")
    return EffectPlan(respond_p, responds, backfires, opts_out, int(delay_days * DAY_MS))
