"""Small deterministic random sources for the simulator: one 64-bit state per customer.

``random.Random`` carries ~2.5 KB of Mersenne Twister state; a shop of millions of customers
each with its own generator would spend gigabytes on it. :class:`SimRandom` is SplitMix64
(Steele, Lea & Flood 2014): one Python int of state, good statistical quality for simulation,
and a copy is just that int, which makes forking a customer's future cheap.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Final, TypeVar

_MASK: Final[int] = (1 << 64) - 1
_GOLDEN: Final[int] = 0x9E3779B97F4A7C15
_MIX1: Final[int] = 0xBF58476D1CE4E5B9
_MIX2: Final[int] = 0x94D049BB133111EB
_TO_UNIT: Final[float] = 2.0**-53
T = TypeVar("T")


def derive_seed(*parts: object) -> int:
    """Return a 64-bit seed from ``parts`` (same parts, same seed, in any process).

    >>> derive_seed(7, "customer", 3) == derive_seed(7, "customer", 3)
    True
    """
    text = "\x1f".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def unit_hash(*parts: object) -> float:
    """Return a uniform number in [0, 1) fixed by ``parts`` (a keyed, stateless draw).

    >>> 0.0 <= unit_hash("intervention-1", "respond") < 1.0
    True
    """
    return (derive_seed(*parts) >> 11) * _TO_UNIT


class SimRandom:
    """SplitMix64 with the few distributions the shop needs."""

    __slots__ = ("state",)

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK

    def copy(self) -> SimRandom:
        """Return an independent generator that will draw exactly what this one would."""
        return SimRandom(self.state)

    def random(self) -> float:
        """Return a uniform float in [0, 1).

        >>> SimRandom(1).random() == SimRandom(1).random()
        True
        """
        self.state = (self.state + _GOLDEN) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * _MIX1) & _MASK
        z = ((z ^ (z >> 27)) * _MIX2) & _MASK
        return ((z ^ (z >> 31)) >> 11) * _TO_UNIT

    def chance(self, probability: float) -> bool:
        """Return True with ``probability``."""
        return self.random() < probability

    def uniform(self, low: float, high: float) -> float:
        """Return a uniform float in [low, high)."""
        return low + (high - low) * self.random()

    def below(self, n: int) -> int:
        """Return a uniform integer in [0, n)."""
        return min(int(self.random() * n), n - 1)

    def choice(self, options: Sequence[T]) -> T:
        """Return one element of ``options``, uniformly."""
        return options[self.below(len(options))]

    def weighted(self, options: Sequence[T], cumulative: Sequence[float]) -> T:
        """Return an element of ``options`` drawn by ``cumulative`` weights (last = total)."""
        target = self.random() * cumulative[-1]
        for option, bound in zip(options, cumulative, strict=True):
            if target < bound:
                return option
        return options[-1]

    def expovariate(self, rate: float) -> float:
        """Return an exponential draw with ``rate`` (mean ``1 / rate``)."""
        return -math.log(1.0 - self.random()) / rate

    def gauss(self) -> float:
        """Return a standard normal draw (Box-Muller, one of the pair)."""
        radius = math.sqrt(-2.0 * math.log(1.0 - self.random()))
        return radius * math.cos(2.0 * math.pi * self.random())

    def lognormal(self, median: float, sigma: float) -> float:
        """Return a log-normal draw with ``median`` and log-scale ``sigma``."""
        return median * math.exp(sigma * self.gauss())

    def geometric(self, mean_extra: float) -> int:
        """Return a count >= 0 with mean ``mean_extra`` (geometric number of extra steps)."""
        if mean_extra <= 0:
            return 0
        stop = 1.0 / (1.0 + mean_extra)
        count = 0
        while self.random() >= stop and count < 1000:
            count += 1
        return count

    def gamma(self, shape: float, scale: float) -> float:
        """Return a gamma draw (Marsaglia-Tsang; ``shape < 1`` by the boost of ``U^(1/a)``)."""
        if shape < 1.0:
            boost = math.pow(self.random(), 1.0 / shape)
            return self.gamma(shape + 1.0, scale) * boost
        d = shape - 1.0 / 3.0
        c = 1.0 / math.sqrt(9.0 * d)
        while True:
            x = self.gauss()
            v = (1.0 + c * x) ** 3
            if v <= 0:
                continue
            u = self.random()
            if math.log(1.0 - u) < 0.5 * x * x + d - d * v + d * math.log(v):
                return float(d * v * scale)

    def beta(self, a: float, b: float) -> float:
        """Return a beta(a, b) draw (``a == 1`` in closed form: ``1 - U^(1/b)``)."""
        if a == 1.0:
            return 1.0 - math.pow(1.0 - self.random(), 1.0 / b)
        x = self.gamma(a, 1.0)
        y = self.gamma(b, 1.0)
        return x / (x + y) if x + y > 0 else 0.5
