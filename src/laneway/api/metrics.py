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

from laneway.agents.llm_stats import LLMStatsSnapshot
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


def _histogram(
    name: str, doc: str, label: str, snapshots: Mapping[str, HistogramSnapshot]
) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for value, snap in snapshots.items():
        buckets = [(repr(b), float(c)) for b, c in zip(snap.bounds, snap.counts, strict=True)]
        buckets.append(("+Inf", float(snap.count)))
        family.add_metric([value], buckets, snap.sum)
    return family


def _llm(stats: LLMStatsSnapshot) -> Iterable[Metric]:
    tokens = CounterMetricFamily(
        "laneway_llm_tokens", "Tokens of LLM steps", labels=["model", "kind"]
    )
    for (model, kind), count in sorted(stats.tokens.items()):
        tokens.add_metric([model, kind], float(count))
    yield tokens
    yield _histogram(
        "laneway_llm_time_to_first_token_seconds",
        "Time from an LLM step's request to its first streamed text",
        "model",
        stats.time_to_first_token,
    )
    yield _histogram(
        "laneway_llm_step_seconds", "Time an LLM step took, whole", "model", stats.step_time
    )


class _Snapshot(Collector):
    def __init__(
        self,
        lanes: Mapping[str, LaneSnapshot],
        conversations: Mapping[Status, int],
        subscribers: int,
        llm: LLMStatsSnapshot,
    ) -> None:
        self.lanes = list(lanes.values())
        self.conversations = conversations
        self.subscribers = subscribers
        self.llm = llm

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
        waits = {lane.name: lane.wait_time for lane in self.lanes}
        yield _histogram("laneway_lane_wait_seconds", "Time waited for a token", "lane", waits)
        services = {lane.name: lane.service_time for lane in self.lanes}
        yield _histogram("laneway_lane_service_seconds", "Time a token was held", "lane", services)
        by_status = GaugeMetricFamily(
            "laneway_conversations", "Conversations by status", labels=["status"]
        )
        for status, count in self.conversations.items():
            by_status.add_metric([status], float(count))
        yield by_status
        yield GaugeMetricFamily(
            "laneway_stream_subscribers", "Open event streams", value=float(self.subscribers)
        )
        yield from _llm(self.llm)


def render(
    lanes: Mapping[str, LaneSnapshot],
    conversations: Mapping[Status, int],
    subscribers: int,
    llm: LLMStatsSnapshot,
) -> bytes:
    return generate_latest(_Snapshot(lanes, conversations, subscribers, llm))
