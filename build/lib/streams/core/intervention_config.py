"""Parameters of the intervention router as one frozen value, validated when built.

The worker builds one from :class:`~streams.settings.Settings` (``holdout_percent``); every
other knob has a default taken from the retention playbook (docs/interventions.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from streams.core.config import BANDS
from streams.errors import SettingsError

DAY_S: Final[float] = 86_400.0
HOUR_S: Final[float] = 3_600.0
CHANNEL_NAMES: Final[tuple[str, ...]] = ("chat", "email", "sms", "push")
VALUE_TIERS: Final[tuple[str, ...]] = ("low", "mid", "high")


@dataclass(frozen=True, slots=True)
class InterventionConfig:
    """Every knob of the router: segments, offers, guard rails and the holdout."""

    # Holdout: a stable share of customers (hash of salt + customer id) gets nothing.
    holdout_percent: float = 10.0
    holdout_salt: str = "churnstream-holdout-v1"
    # Proactive offers start when a customer's band rises to this band or above.
    act_from_band: str = "HIGH"
    # A customer's first band is the prior's verdict on someone we know nothing about yet
    # (every new profile starts HIGH under the default prior): acting on it would send a
    # coupon on zero evidence. Only a rise between bands is a signal.
    act_on_first_band: bool = False
    # Value tiers by lifetime spend; the high tier at high risk gets a human on live chat.
    mid_value_spend: float = 100.0
    high_value_spend: float = 500.0
    # 1-2 orders below this average order value get offers at their own price level.
    low_order_value: float = 40.0
    # Contacts per customer per window, by value tier: valuable customers get fewer.
    cap_window_days: float = 30.0
    cap_low: int = 4
    cap_mid: int = 3
    cap_high: int = 2
    # Proactive contacts wait this long after any contact; service triggers of one kind
    # (a burst of failed payment retries) are answered once per trigger cooldown.
    cooldown_hours: float = 72.0
    trigger_cooldown_hours: float = 24.0
    # Quiet hours in the customer's local time: contacts are deferred to the end, not dropped.
    quiet_start_hour: int = 21
    quiet_end_hour: int = 8
    quiet_channels: tuple[str, ...] = CHANNEL_NAMES
    default_timezone: str = "UTC"
    # How long an intervention stays valid after the decision, by kind.
    chat_expiry_hours: float = 24.0
    offer_expiry_days: float = 7.0
    message_expiry_days: float = 2.0
    # Offers: percentages, and the share of the average order value given as amount off.
    first_order_percent: float = 20.0
    early_percent: float = 10.0
    price_level_share: float = 0.25
    min_amount_off: float = 2.0
    member_percent: float = 15.0
    winback_percent: float = 10.0
    favourites: int = 3
    # Offers and win-backs are marketing: they need an explicit opt-in. Service messages
    # (payment recovery, support) only need the customer not to have opted out.
    service_needs_opt_in: bool = False
    max_deferred: int = 4

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout_percent <= 100.0:
            raise SettingsError(f"holdout_percent must be 0-100, got {self.holdout_percent!r}")
        if self.act_from_band not in BANDS:
            raise SettingsError(f"act_from_band must be one of {BANDS}, got {self.act_from_band!r}")
        if not 0.0 <= self.mid_value_spend <= self.high_value_spend:
            msg = (
                "need 0 <= mid_value_spend <= high_value_spend, got "
                f"{self.mid_value_spend!r} and {self.high_value_spend!r}"
            )
            raise SettingsError(msg)
        for name in ("cap_low", "cap_mid", "cap_high", "max_deferred"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must not be negative, got {getattr(self, name)!r}")
        for name in ("quiet_start_hour", "quiet_end_hour"):
            if not 0 <= getattr(self, name) <= 23:
                raise SettingsError(f"{name} must be 0-23, got {getattr(self, name)!r}")
        unknown = set(self.quiet_channels) - set(CHANNEL_NAMES)
        if unknown:
            raise SettingsError(f"quiet_channels: unknown channel {sorted(unknown)[0]!r}")
        # A deferred contact must still be valid when quiet hours end (12 h covers DST days).
        quiet_s = self.quiet_length_hours * HOUR_S + HOUR_S
        if self.quiet_length_hours and min(self.expiries_s.values()) <= quiet_s:
            msg = f"every expiry must exceed the quiet hours by an hour, got {self.expiries_s!r}"
            raise SettingsError(msg)

    @property
    def quiet_length_hours(self) -> int:
        """Return how many hours the quiet period lasts (0 = no quiet hours)."""
        return (self.quiet_end_hour - self.quiet_start_hour) % 24

    @property
    def expiries_s(self) -> dict[str, float]:
        """Return kind -> seconds an intervention of that kind stays valid."""
        return {
            "chat": self.chat_expiry_hours * HOUR_S,
            "offer": self.offer_expiry_days * DAY_S,
            "message": self.message_expiry_days * DAY_S,
        }

    def cap_for(self, tier: str) -> int:
        """Return the contacts allowed per cap window for value ``tier``."""
        return {"low": self.cap_low, "mid": self.cap_mid, "high": self.cap_high}[tier]

    def value_tier(self, spend: float) -> str:
        """Return the value tier (low / mid / high) of a customer with lifetime ``spend``.

        >>> InterventionConfig().value_tier(120.0)
        'mid'
        """
        if spend >= self.high_value_spend:
            return "high"
        if spend >= self.mid_value_spend:
            return "mid"
        return "low"
