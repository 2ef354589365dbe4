"""Medians of per-round ratios, with their spread.

Each round measures every variant once, so a ratio taken within one round compares measurements made minutes
apart, and machine noise that lasts longer than a round cancels. The median over rounds resists one bad round;
the spread (lowest and highest per-round ratio) says how far to trust it.
"""

from __future__ import annotations

import statistics
from typing import Sequence


def ratio_spread(numerators: Sequence[float | None], denominators: Sequence[float | None]) -> dict[str, float] | None:
    """{"median", "min", "max", "rounds"} of numerator/denominator per round; None when no round has both."""
    ratios = [n / d for n, d in zip(numerators, denominators) if n is not None and d]
    return _spread(ratios)


def value_spread(values: Sequence[float | None]) -> dict[str, float] | None:
    """The same summary of values that are already ratios (one per round)."""
    return _spread([v for v in values if v is not None])


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": len(values)}


def format_spread(spread: dict[str, float] | None) -> str:
    """``0.71x (0.68-0.74)``; ``-`` when there is nothing to show."""
    if spread is None:
        return "-"
    if spread["rounds"] == 1:
        return f"{spread['median']:.2f}x"
    return f"{spread['median']:.2f}x ({spread['min']:.2f}-{spread['max']:.2f})"
