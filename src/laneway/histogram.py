"""Fixed-bucket latency histograms that export to Prometheus unchanged."""

from __future__ import annotations

import bisect

import msgspec

# Upper bounds in seconds. They span a sub-millisecond store read up to a
# five-minute run, so one bucket set serves wait times and service times alike.
DEFAULT_BOUNDS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


class HistogramSnapshot(msgspec.Struct, frozen=True):
    """Cumulative counts per upper bound, as Prometheus expects them.

    ``counts[i]`` is the number of observations ``<= bounds[i]``; observations
    above the last bound appear only in ``count`` (the ``+Inf`` bucket).
    """

    bounds: list[float]
    counts: list[int]
    count: int
    sum: float

    def quantile(self, q: float) -> float | None:
        """Estimate quantile ``q`` by linear interpolation inside its bucket.

        Returns None without observations; an estimate in the ``+Inf`` bucket is
        reported as the last finite bound, the best the buckets can say.
        """
        if self.count == 0:
            return None
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0
        for bound, cumulative in zip(self.bounds, self.counts, strict=True):
            if cumulative >= rank:
                in_bucket = cumulative - lower_count
                fraction = (rank - lower_count) / in_bucket if in_bucket else 1.0
                return lower_bound + (bound - lower_bound) * fraction
            lower_bound, lower_count = bound, cumulative
        return self.bounds[-1]


class Histogram:
    """A mutable histogram; callers serialise access (lanes update it on the loop)."""

    __slots__ = ("_bounds", "_buckets", "_count", "_sum")

    def __init__(self, bounds: tuple[float, ...] = DEFAULT_BOUNDS) -> None:
        self._bounds = bounds
        # One slot per bound plus the overflow slot; kept non-cumulative so an
        # observation costs a single increment.
        self._buckets = [0] * (len(bounds) + 1)
        self._count = 0
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._buckets[bisect.bisect_left(self._bounds, value)] += 1
        self._count += 1
        self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        cumulative: list[int] = []
        running = 0
        for n in self._buckets[:-1]:
            running += n
            cumulative.append(running)
        return HistogramSnapshot(
            bounds=list(self._bounds), counts=cumulative, count=self._count, sum=self._sum
        )
