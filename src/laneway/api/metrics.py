"""Prometheus exposition of lane counters, histograms and conversation counts.

Families are built per scrape from one snapshot of each lane, so the numbers of
one scrape are consistent with each other; prometheus_client renders them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from laneway.histogram import HistogramSnapshot
from laneway.lanes import LaneSnapshot
from laneway.models import Status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_GAUGES = {
    "size": "Tokens of the lane",
    "running": "Calls holding a token",
    "waiting": "Calls waiting for a token",
    "peak_waiting": "Most calls ever waiting at once",
    "max_waiting": "Waiting calls allowed before LaneFull",
    "oldest_wait_s": "Seconds the oldest waiting call has waited",
}
_COUNTERS = {
    "admitted": "Calls that got a token",
    "completed": "Calls that returned",
    "failed": "Calls that raised or were cancelled while running",
    "cancelled_waiting": "Calls cancelled while waiting",
    "rejected": "Calls refused with LaneFull",
}


def _metric_name(field: str) -> str:
    # Prometheus names carry their unit spelled out: oldest_wait_s -> _seconds.
    if field.endswith("_s"):
        return f"laneway_lane_{field.removesuffix('_s')}_seconds"
    return f"laneway_lane_{field}"


def _histogram(name: str, doc: str, lanes: Iterable[LaneSnapshot], pick: str) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=["lane"])
    for lane in lanes:
        snap: HistogramSnapshot = getattr(lane, pick)
        buckets = [(repr(b), float(c)) for b, c in zip(snap.bounds, snap.counts, strict=True)]
        buckets.append(("+Inf", float(snap.count)))
        family.add_metric([lane.name], buckets, snap.sum)
    return family


class _Snapshot(Collector):
    def __init__(
        self,
        lanes: Mapping[str, LaneSnapshot],
        conversations: Mapping[Status, int],
        subscribers: int,
    ) -> None:
        self.lanes = list(lanes.values())
        self.conversations = conversations
        self.subscribers = subscribers

    def collect(self) -> Iterable[Metric]:
        for field, doc in _GAUGES.items():
            gauge = GaugeMetricFamily(_metric_name(field), doc, labels=["lane"])
            for lane in self.lanes:
                gauge.add_metric([lane.name], float(getattr(lane, field)))
            yield gauge
        for field, doc in _COUNTERS.items():
            counter = CounterMetricFamily(_metric_name(field), doc, labels=["lane"])
            for lane in self.lanes:
                counter.add_metric([lane.name], float(getattr(lane, field)))
            yield counter
        yield _histogram(
            "laneway_lane_wait_seconds", "Time waited for a token", self.lanes, "wait_time"
        )
        yield _histogram(
            "laneway_lane_service_seconds", "Time a token was held", self.lanes, "service_time"
        )
        by_status = GaugeMetricFamily(
            "laneway_conversations", "Conversations by status", labels=["status"]
        )
        for status, count in self.conversations.items():
            by_status.add_metric([status], float(count))
        yield by_status
        yield GaugeMetricFamily(
            "laneway_stream_subscribers", "Open event streams", value=float(self.subscribers)
        )


def render(
    lanes: Mapping[str, LaneSnapshot], conversations: Mapping[Status, int], subscribers: int
) -> bytes:
    return generate_latest(_Snapshot(lanes, conversations, subscribers))
