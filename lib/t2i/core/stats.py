"""How sure a measured fraction is: the 95% interval that every judge table shows (notebooks 00-07).

A fraction measured on n images is a `Rate`: a float (so it adds, compares and prints like
one) that remembers its count k and its n, and gives its Wilson score interval (Wilson 1927),
which stays inside [0, 1] and behaves at 0/n and n/n, where the normal approximation does not.
`plot.markdown_table` shows a Rate with its interval and n.
"""

from __future__ import annotations

import math

Z95 = 1.959964  # the standard normal's 97.5% quantile


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials: centre (k + z^2/2) / (n + z^2),
    half-width z sqrt(k(n - k)/n + z^2/4) / (n + z^2)."""
    if n <= 0:
        return (0.0, 1.0)
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    return (max(0.0, centre - half), min(1.0, centre + half))


class Interval(tuple):
    """(low, high) that prints as "[0.742, 0.990]" in a sentence."""

    def __repr__(self) -> str:
        return f"[{self[0]:.3f}, {self[1]:.3f}]"


class Rate(float):
    """A fraction k/n that keeps k and n: Rate.of(hits) or Rate(k, n)."""

    k: int
    n: int

    def __new__(cls, k: int, n: int):
        value = super().__new__(cls, k / n if n else float("nan"))
        value.k, value.n = int(k), int(n)
        return value

    @classmethod
    def of(cls, hits) -> Rate:
        """The rate of True among an iterable of booleans."""
        hits = [bool(h) for h in hits]
        return cls(sum(hits), len(hits))

    def interval(self) -> Interval:
        """The 95% Wilson interval."""
        return Interval(wilson(self.k, self.n))

    def __reduce__(self):  # pickle/copy keep k and n
        return (Rate, (self.k, self.n))

    def __repr__(self) -> str:
        return f"{float(self):.3f} {self.interval()} (n={self.n})"


def differ(a: Rate, b: Rate) -> bool:
    """Whether the 95% intervals of two rates are disjoint (a conservative test of a difference)."""
    (alo, ahi), (blo, bhi) = a.interval(), b.interval()
    return ahi < blo or bhi < alo
