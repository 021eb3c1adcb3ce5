"""Parameters of the scoring core as one frozen value (independent of ``streams.settings``)."""

from __future__ import annotations

from dataclasses import dataclass

from streams.errors import SettingsError

BANDS: tuple[str, str, str, str] = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


@dataclass(frozen=True, slots=True)
class PriorParams:
    """BG/NBD parameters of the cold-start prior (rates per day).

    The defaults are shop-agnostic and deliberately not fitted on any evaluation data: a
    purchase rate around one order every ~140 days (``r / alpha``) with a wide spread, and
    a mean drop-out chance of 25 % after each repeat purchase (``a / (a + b)``).
    """

    r: float = 0.5
    alpha_days: float = 70.0
    a: float = 1.0
    b: float = 3.0


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    """Every knob of the per-customer scoring step; the worker builds one from Settings."""

    horizon_days: float = 90.0
    # Snapshots sit on a per-customer grid (phase from a hash of the id), so every customer
    # contributes about horizon/interval pending examples however active they are.
    snapshot_interval_days: float = 30.0
    max_pending_snapshots: int = 4
    # No timers (snapshots, silence milestones) after this much silence: bounds timer work
    # spent on customers who are long gone.
    max_silence_days: float = 400.0
    # Silence milestones: being at one's usual gap, or a week quiet, is no news; waking every
    # customer there doubled the timer work (and state writes) for no change of band.
    silence_gap_multiples: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0)
    silence_days: tuple[float, ...] = (14.0, 30.0, 60.0, 90.0, 180.0, 365.0)
    band_thresholds: tuple[float, float, float] = (0.4, 0.6, 0.8)
    band_hysteresis: float = 0.03
    min_dwell_days: float = 1.0
    prior: PriorParams = PriorParams()
    # The learned model's weight grows linearly to 1 over this many learned examples.
    prior_blend_examples: int = 1000
    # Expert prior until the model has learned: each unrecovered failed payment (up to 3)
    # adds this much log-odds of churn. BG/NBD knows only purchases, not lost sales.
    failed_payment_log_odds: float = 0.6
    top_k_preferences: int = 5
    max_reasons: int = 3
    engagement_half_life_days: float = 30.0
    service_half_life_days: float = 14.0
    order_half_life_days: float = 90.0
    session_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.horizon_days <= 0:
            raise SettingsError(f"horizon_days must be positive, got {self.horizon_days!r}")
        if self.snapshot_interval_days <= 0:
            msg = f"snapshot_interval_days must be positive, got {self.snapshot_interval_days!r}"
            raise SettingsError(msg)
        if self.max_pending_snapshots < 1:
            msg = f"max_pending_snapshots must be at least 1, got {self.max_pending_snapshots!r}"
            raise SettingsError(msg)
        low, mid, high = self.band_thresholds
        if not 0.0 < low < mid < high < 1.0:
            msg = f"band_thresholds must rise strictly inside (0, 1), got {self.band_thresholds!r}"
            raise SettingsError(msg)
        if not 0.0 <= self.band_hysteresis < (mid - low) / 2:
            msg = (
                "band_hysteresis must be in [0, half the narrowest band), "
                f"got {self.band_hysteresis!r}"
            )
            raise SettingsError(msg)

    @property
    def horizon_s(self) -> float:
        """Return the horizon H in seconds."""
        return self.horizon_days * 86_400.0
