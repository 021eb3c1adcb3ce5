"""The cold-start prior: BG/NBD probability of no order within the horizon.

BG/NBD (Fader, Hardie & Lee 2005): while alive a customer orders at Poisson rate lambda
(Gamma(r, alpha) over customers) and after each repeat order drops out with chance p
(Beta(a, b)). We need P(no order in (T, T + H]) rather than P(alive): for a one-time buyer
BG/NBD says P(alive) = 1 however long the silence, but the chance of no order still rises
with silence because the posterior rate falls.
"""

from __future__ import annotations

import math

from streams.core.config import PriorParams

_MAX_EXPONENT = 700.0
_MAX_P = 1.0 - 1e-6


def p_no_order_within(
    repeat_orders: int,
    last_order_age_days: float,
    tenure_days: float,
    horizon_days: float,
    params: PriorParams,
) -> float:
    """Return the BG/NBD probability that a customer places no order in the next horizon.

    ``repeat_orders`` (x) counts orders after the first, ``last_order_age_days`` (t_x) is the
    time from the first to the last order and ``tenure_days`` (T) from the first order to now.
    Customers who never ordered pass zeros for x and t_x and their time since first seen as T.

    >>> one_time_recent = p_no_order_within(0, 0.0, 10.0, 90.0, PriorParams())
    >>> one_time_stale = p_no_order_within(0, 0.0, 300.0, 90.0, PriorParams())
    >>> round(one_time_recent, 3), round(one_time_stale, 3)
    (0.686, 0.897)
    >>> p_no_order_within(5, 100.0, 105.0, 90.0, PriorParams()) < one_time_recent
    True
    """
    # max/min written out (same values, ties and NaN alike): this runs for every score
    x = repeat_orders if repeat_orders > 0 else 0
    tenure = tenure_days if tenure_days > 0.0 else 0.0
    t_x = last_order_age_days if last_order_age_days > 0.0 else 0.0
    t_x = tenure if tenure < t_x else t_x
    r, alpha, a, b = params.r, params.alpha_days, params.a, params.b
    if x > 0:
        # P(dead | data) / P(alive | data) = a / (b + x - 1) * ((alpha + T) / (alpha + t_x))^(r+x)
        exponent = min((r + x) * math.log((alpha + tenure) / (alpha + t_x)), _MAX_EXPONENT)
        odds_dead = a / (b + x - 1) * math.exp(exponent)
        p_alive = 1.0 / (1.0 + odds_dead)
    else:
        p_alive = 1.0
    # Given alive, lambda ~ Gamma(r + x, alpha + T): P(no order in H) is the Gamma's Laplace
    # transform at H.
    p_quiet_if_alive = math.exp(
        (r + x) * math.log((alpha + tenure) / (alpha + tenure + horizon_days))
    )
    return 1.0 - p_alive * (1.0 - p_quiet_if_alive)


def logit(probability: float) -> float:
    """Return log(p / (1 - p)), clamped so that 0 and 1 stay finite.

    >>> round(logit(0.5), 6)
    0.0
    """
    p = 1e-6 if probability < 1e-6 else probability  # max/min written out: once per score
    p = _MAX_P if p > _MAX_P else p
    return math.log(p / (1.0 - p))


def sigmoid(value: float) -> float:
    """Return 1 / (1 + exp(-value)) without overflow.

    >>> sigmoid(0.0)
    0.5
    """
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    e = math.exp(value)
    return e / (1.0 + e)
