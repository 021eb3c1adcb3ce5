"""The risk policy: bands with hysteresis and a minimum dwell, so wobbles emit nothing."""

from __future__ import annotations

from bisect import bisect_right

from streams.core.config import BANDS, ScoringConfig


def raw_band_index(score: float, thresholds: tuple[float, ...]) -> int:
    """Return the band index of ``score`` with no memory (0 = LOW ... 3 = CRITICAL).

    >>> [raw_band_index(s, (0.4, 0.6, 0.8)) for s in (0.1, 0.4, 0.7, 0.95)]
    [0, 1, 2, 3]
    """
    return bisect_right(thresholds, score)


def next_band(
    score: float,
    current_band: str | None,
    band_since_s: float | None,
    now_s: float,
    config: ScoringConfig,
) -> str:
    """Return the band after seeing ``score``: it moves only past a threshold by the
    hysteresis margin, and not before the current band has lasted ``min_dwell_days``.

    >>> config = ScoringConfig(band_thresholds=(0.4, 0.6, 0.8), band_hysteresis=0.05)
    >>> next_band(0.62, "MEDIUM", 0.0, 1e9, config), next_band(0.66, "MEDIUM", 0.0, 1e9, config)
    ('MEDIUM', 'HIGH')
    >>> next_band(0.9, None, None, 0.0, config)
    'CRITICAL'
    """
    thresholds = config.band_thresholds
    if current_band is None:
        return BANDS[raw_band_index(score, thresholds)]
    current = BANDS.index(current_band)
    margin = config.band_hysteresis
    candidate = current
    upper = raw_band_index(score - margin, thresholds)
    lower = raw_band_index(score + margin, thresholds)
    if upper > current:
        candidate = upper
    elif lower < current:
        candidate = lower
    if candidate == current:
        return current_band
    dwell_s = config.min_dwell_days * 86_400.0
    if band_since_s is not None and now_s - band_since_s < dwell_s:
        return current_band
    return BANDS[candidate]
