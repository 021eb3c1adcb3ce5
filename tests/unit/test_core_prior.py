"""The BG/NBD cold-start prior gives sensible P(no order within H)."""

from __future__ import annotations

import pytest

from streams.core.config import PriorParams
from streams.core.prior import p_no_order_within

PARAMS = PriorParams()


def test_one_time_buyer_risk_rises_with_silence() -> None:
    values = [p_no_order_within(0, 0.0, days, 90.0, PARAMS) for days in (1, 30, 120, 365)]
    assert values == sorted(values)
    assert values[0] < values[-1] < 1.0


def test_repeat_buyer_in_rhythm_is_safer_than_one_silent_for_many_gaps() -> None:
    in_rhythm = p_no_order_within(6, 180.0, 190.0, 90.0, PARAMS)  # ordered 10 days ago
    gone_quiet = p_no_order_within(6, 60.0, 190.0, 90.0, PARAMS)  # silent for 130 days
    assert in_rhythm < 0.5 < gone_quiet


@pytest.mark.parametrize("horizon", [1.0, 30.0, 90.0, 365.0])
def test_prior_is_a_probability_and_longer_horizons_are_less_quiet(horizon: float) -> None:
    shorter = p_no_order_within(3, 50.0, 80.0, horizon, PARAMS)
    longer = p_no_order_within(3, 50.0, 80.0, horizon * 2, PARAMS)
    assert 0.0 < longer < shorter < 1.0


def test_huge_repeat_counts_do_not_overflow() -> None:
    assert 0.0 <= p_no_order_within(10_000, 0.0, 3_000.0, 90.0, PARAMS) <= 1.0
