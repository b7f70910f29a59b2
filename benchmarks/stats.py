"""Percentiles of samples and quantiles of the lanes' cumulative histograms."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from laneway.histogram import HistogramSnapshot


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Summary:
    """p50, p99 and max of a set of samples, in the samples' unit."""

    count: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            return cls(0, math.nan, math.nan, math.nan)
        return cls(len(values), percentile(values, 0.5), percentile(values, 0.99), max(values))


@dataclass(frozen=True)
class Histogram:
    """A lane histogram as ``GET /api/lanes`` gives it: ``counts[i]`` observations
    were ``<= bounds[i]``; those above the last bound show only in ``count``."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    sum: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        return cls(tuple(data["bounds"]), tuple(data["counts"]), data["count"], data["sum"])

    def minus(self, earlier: Histogram) -> Histogram:
        """The observations made since ``earlier`` (counters only ever grow)."""
        counts = tuple(a - b for a, b in zip(self.counts, earlier.counts, strict=True))
        return Histogram(self.bounds, counts, self.count - earlier.count, self.sum - earlier.sum)

    def quantile(self, q: float) -> float:
        """Quantile ``q`` as the server's own histogram estimates it; NaN when empty."""
        snapshot = HistogramSnapshot(list(self.bounds), list(self.counts), self.count, self.sum)
        value = snapshot.quantile(q)
        return math.nan if value is None else value
