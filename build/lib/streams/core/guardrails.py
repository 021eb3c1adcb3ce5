"""Guard rails of the router: holdout, consent and channel, cooldown, frequency caps, quiet hours.

Each is a small pure function of the customer, their contact history and the event time,
so a rule can be tested alone and the router applies them in one documented order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.core.intervention_config import DAY_S, HOUR_S, InterventionConfig
from streams.core.state import CustomerState

# Marketing falls back through these after the preferred channel: email is the least
# intrusive, SMS the most (and the most regulated). Chat only when the customer prefers it.
FALLBACK_CHANNELS: tuple[str, ...] = ("email", "push", "sms")
_HASH_BUCKETS = 1 << 64


def holdout_position(customer_id: str, salt: str) -> float:
    """Return the customer's stable position in [0, 100) for holdout assignment.

    A keyed hash rather than ``random``: the same customer lands in the same group in every
    process and replay, and changing the salt draws a fresh, independent holdout.

    >>> holdout_position("c1", "s") == holdout_position("c1", "s")
    True
    """
    text = f"{salt}\x1f{customer_id}".encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "big") * 100.0 / _HASH_BUCKETS


def in_holdout(customer_id: str, config: InterventionConfig) -> bool:
    """Return whether the customer belongs to the holdout group (gets no intervention)."""
    return holdout_position(customer_id, config.holdout_salt) < config.holdout_percent


def channel_allowed(
    customer: CustomerState, channel: str, service: bool, config: InterventionConfig
) -> bool:
    """Return whether ``channel`` may be used: marketing needs an explicit opt-in, service
    messages only the absence of an opt-out (unless ``config.service_needs_opt_in``).
    """
    consent: bool | None = getattr(customer, f"{channel}_opt_in")
    if service and not config.service_needs_opt_in:
        return consent is not False
    return consent is True


def choose_channel(
    customer: CustomerState, kind: str, service: bool, config: InterventionConfig
) -> str | None:
    """Return the channel to use for ``kind``, or None when the customer allows none.

    A chat is a live conversation, so it only goes out on chat; other kinds try the
    customer's preferred channel first, then email, push and SMS.
    """
    if kind == "chat":
        order: Sequence[str] = ("chat",)
    else:
        preferred = customer.preferred_channel
        order = (*((preferred,) if preferred else ()), *FALLBACK_CHANNELS)
    for channel in order:
        if channel_allowed(customer, channel, service, config):
            return channel
    return None


def contacts_in_window(contacts: Sequence[tuple[float, str]], now_s: float, window_s: float) -> int:
    """Return how many contacts fall after ``now_s - window_s`` (later ones count too)."""
    return sum(1 for when_s, _ in contacts if when_s > now_s - window_s)


def is_capped(
    contacts: Sequence[tuple[float, str]],
    customer: CustomerState,
    now_s: float,
    config: InterventionConfig,
) -> bool:
    """Return whether the customer's value tier has used up its contacts for the window."""
    cap = config.cap_for(config.value_tier(customer.spend))
    return contacts_in_window(contacts, now_s, config.cap_window_days * DAY_S) >= cap


def in_cooldown(
    contacts: Sequence[tuple[float, str]],
    segment: str,
    service: bool,
    now_s: float,
    config: InterventionConfig,
) -> bool:
    """Return whether a contact now would come too soon after an earlier one.

    Proactive contacts wait ``cooldown_hours`` after any contact. A service message answers
    something the customer just went through, so only the same kind of message blocks it.
    Distances are absolute so a late event cannot slip in just before a recorded contact.
    """
    if service:
        window_s = config.trigger_cooldown_hours * HOUR_S
        return any(abs(now_s - when_s) < window_s for when_s, seg in contacts if seg == segment)
    window_s = config.cooldown_hours * HOUR_S
    return any(abs(now_s - when_s) < window_s for when_s, _ in contacts)


@lru_cache(maxsize=512)
def zone_of(name: str | None, default: str) -> ZoneInfo:
    """Return the time zone ``name``, or ``default`` when it is missing or unknown.

    Profiles come from many producers; an unknown zone must not stop the stream, and the
    default (UTC unless configured) is a safer guess than dropping the contact.
    """
    for candidate in (name, default):
        if not candidate:
            continue
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            continue
    return ZoneInfo("UTC")


def quiet_until_s(
    now_s: float, timezone: str | None, channel: str | None, config: InterventionConfig
) -> float | None:
    """Return when the customer's quiet hours end (epoch s), or None if a contact may go now.

    >>> from datetime import UTC
    >>> config = InterventionConfig()
    >>> late = datetime(2024, 1, 1, 23, 30, tzinfo=UTC).timestamp()  # 08:30 in Tokyo
    >>> morning = datetime(2024, 1, 2, 8, tzinfo=UTC).timestamp()
    >>> quiet_until_s(late, "UTC", "email", config) == morning
    True
    >>> quiet_until_s(late, "Asia/Tokyo", "email", config) is None
    True
    """
    if channel is None or channel not in config.quiet_channels or not config.quiet_length_hours:
        return None
    zone = zone_of(timezone, config.default_timezone)
    local = datetime.fromtimestamp(now_s, zone)
    start, end = config.quiet_start_hour, config.quiet_end_hour
    hour = local.hour
    quiet = (hour >= start or hour < end) if start > end else start <= hour < end
    if not quiet:
        return None
    day = local.date() if hour < end else local.date() + timedelta(days=1)
    # combine() picks the right UTC offset for that date, so DST changes overnight are honoured.
    return datetime.combine(day, time(end), tzinfo=zone).timestamp()
