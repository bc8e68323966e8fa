"""Small, pure statistics for the benchmarks: medians, min-max spread, ratios, run order.

Everything here is deterministic and cheap so the unit tests can pin it down exactly.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Series:
    """Repeated measurements of one quantity (seconds, bytes, ...)."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        """Append one measurement."""
        self.values.append(float(value))

    @property
    def median(self) -> float:
        """The median (the mean of the middle two for an even count)."""
        if not self.values:
            raise ValueError("no measurements")
        return float(statistics.median(self.values))

    @property
    def low(self) -> float:
        """The smallest measurement."""
        return min(self.values)

    @property
    def high(self) -> float:
        """The largest measurement."""
        return max(self.values)

    @property
    def spread(self) -> float:
        """(max - min) / median: how far apart the runs were, as a fraction of the median."""
        median = self.median
        return (self.high - self.low) / median if median else 0.0

    def summary(self, digits: int = 4) -> dict[str, Any]:
        """``{"median", "min", "max", "runs"}`` rounded for results.json."""
        return {
            "median": round(self.median, digits),
            "min": round(self.low, digits),
            "max": round(self.high, digits),
            "runs": [round(v, digits) for v in self.values],
        }


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; a zero denominator is an error rather than a silent infinity."""
    if denominator == 0:
        raise ZeroDivisionError("ratio with a zero denominator")
    return numerator / denominator


@dataclass(frozen=True)
class Comparison:
    """Side A (publisher) against side B (llama.cpp run directly), measured in alternating rounds."""

    a: Series
    b: Series

    @property
    def ratio(self) -> float:
        """median(A) / median(B): the headline figure."""
        return ratio(self.a.median, self.b.median)

    def round_ratios(self) -> list[float]:
        """A/B of each round (A and B of the same round ran back to back)."""
        if len(self.a.values) != len(self.b.values):
            raise ValueError(f"unpaired rounds: {len(self.a.values)} A runs, {len(self.b.values)} B runs")
        return [ratio(x, y) for x, y in zip(self.a.values, self.b.values, strict=True)]

    @property
    def ratio_range(self) -> tuple[float, float]:
        """Min and max of the per-round ratios."""
        rounds = self.round_ratios()
        return min(rounds), max(rounds)


def alternating(sides: Sequence[str], rounds: int) -> Iterator[tuple[int, str]]:
    """``(round, side)`` in the order to run them: A B A B ... for ``rounds`` rounds."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    if not sides:
        raise ValueError("no sides to run")
    for index in range(rounds):
        for side in sides:
            yield index, side


def within(value: float, limit: float) -> bool:
    """True when ``value`` meets a target of at most ``limit``."""
    return value <= limit
