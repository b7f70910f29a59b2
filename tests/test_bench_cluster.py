"""The cluster benchmark's pure helpers: what it reads from streams and from the
database, and how it turns what it measured into figures. No timing here."""

from __future__ import annotations

import json
import math

from benchmarks.cluster import controls, stream, throughput
from benchmarks.cluster.controls import Controlled, status_stamps
from benchmarks.cluster.stream import MarkerScanner, StreamLatency, marker
from benchmarks.cluster.throughput import Throughput, describe_statuses, round_orders
from benchmarks.components import cluster


def test_markers_are_found_once_however_the_bytes_are_cut() -> None:
    frames = b"".join(
        f'id: {i}\ndata: {{"kind":"message","data":{{"text":"{marker(i)}"}}}}\n\n'.encode()
        for i in range(5)
    )
    for size in (1, 2, 7, 12, len(frames)):
        scanner = MarkerScanner()
        found = []
        for start in range(0, len(frames), size):
            found += scanner.feed(frames[start : start + size])
        assert found == [0, 1, 2, 3, 4], size


def test_a_marker_is_not_taken_for_a_longer_number() -> None:
    scanner = MarkerScanner()
    assert scanner.feed(b"xmark-12") == []
    assert scanner.feed(b"3456 xmark-000007") == [123456, 7]


def test_rounds_alternate_their_order() -> None:
    assert round_orders(3, (1, 2, 3)) == [[1, 2, 3], [3, 2, 1], [1, 2, 3]]


def test_statuses_read_as_one_line() -> None:
    lease = {"owner": "f559af0a1234", "fence": 1}
    rows = [
        ("2026-12-06T23:26:23.599Z", json.dumps({"status": "queued"})),
        ("2026-12-06T23:26:24.300Z", json.dumps({"status": "running", "lease": lease})),
        (
            "2026-12-06T23:26:24.318Z",
            json.dumps({"status": "paused", "reason": "pause requested", "lease": lease}),
        ),
    ]
    assert describe_statuses(rows) == (
        "queued; +701 ms running (owner f559af0a, fence 1); "
        "+18 ms paused 'pause requested' (owner f559af0a, fence 1)"
    )


def test_a_stream_that_never_relays_gives_no_figure_and_says_why() -> None:
    found = StreamLatency(rounds=10, timed_out_at=0)
    p50, p99 = found.figures()
    assert math.isnan(p50.value)
    assert math.isnan(p99.value)
    assert p99.meets is False
    assert "relay" in p99.note
    assert "no frame on B" in p99.line()


def test_stream_figures_are_the_percentiles_of_the_cross_instance_latency() -> None:
    cross = [0.001 * (i + 1) for i in range(100)]
    found = StreamLatency(rounds=100, cross=cross, same=[0.001] * 100)
    p50, p99 = found.figures()
    assert p50.value == 50.5
    assert math.isclose(p99.value, 99.01)
    assert p99.target == stream.TARGET_MS
    assert p99.meets is False  # 99 ms is past 50
    assert "A's own stream: p50 1.00" in p99.note


def test_status_stamps_are_each_status_s_first() -> None:
    events = [
        {"timestamp": "2026-12-06T23:26:23.500000Z", "data": {"status": "queued"}},
        {"timestamp": "2026-12-06T23:26:23.512500Z", "data": {"status": "running"}},
        {"timestamp": "2026-12-06T23:26:23.700000Z", "data": {"status": "paused"}},
        {"timestamp": "2026-12-06T23:26:24.000000Z", "data": {"status": "queued"}},
    ]
    stamps = status_stamps(events)
    assert math.isclose(stamps["running"] - stamps["queued"], 0.0125, abs_tol=1e-6)
    assert math.isclose(stamps["paused"] - stamps["queued"], 0.2, abs_tol=1e-6)


def test_control_figures_judge_the_worst_interrupt_and_inform_of_the_handoff() -> None:
    found = Controlled(
        trials=4,
        handoff=[0.004, 0.006, 0.008, 0.030],
        queued_to_running=[0.002, 0.003, 0.004, 0.020],
        interrupts=[0.012, 0.010, 0.090, 0.014],
    )
    p50, p99, worst = found.figures()
    assert p50.value == 7.0
    assert p50.target is None
    assert math.isclose(p99.value, 29.34)
    assert p99.target is None
    assert "queued stamp: p50 3.5" in p99.note
    assert worst.value == 90.0
    assert worst.target == controls.interrupt.TARGET_MS
    assert worst.meets is True
    assert worst.note.startswith("median 13.0 ms; a pause of the same run: not paused after 2 s")


def test_an_interrupt_never_paused_is_the_worst_and_misses() -> None:
    found = Controlled(
        trials=3,
        handoff=[0.004] * 3,
        queued_to_running=[0.002] * 3,
        interrupts=[0.012, math.nan, 0.010],
        pause=0.5,
    )
    worst = found.figures()[-1]
    assert math.isnan(worst.value)
    assert worst.meets is False
    assert "median 11.0 ms; 1 of 3 not paused within 5 s" in worst.note
    assert "a pause of the same run: 500 ms" in worst.note
    assert found.details()["interrupt_ms"][1] is None


def test_throughput_figures_compare_with_one_instance_and_count_unfinished_runs() -> None:
    found = Throughput(
        batch=240,
        rates={1: [30.0, 28.0, 29.0], 2: [55.0, 54.0, 53.0], 3: [60.0, 72.0, 70.0]},
        busy={1: [50.0] * 3, 2: [80.0] * 3, 3: [95.0] * 3},
        taken={1: [720], 2: [360, 360], 3: [240, 240, 240]},
        unfinished={
            1: [],
            2: [("queued", "conversation d, queued, owner 5556554e (lease live: True)")],
            3: [("paused", "conversation c, paused, statuses: queued; +1 ms paused")],
        },
    )
    by_name = {f.name: f for f in found.figures()}
    assert by_name["run throughput, 3 instances (24 run tokens)"].value == 70.0
    ratio = by_name["run throughput, 3 instances / 1"]
    assert ratio.value == 70.0 / 29.0
    assert ratio.target == throughput.SCALING_TARGET
    assert ratio.meets is True
    assert by_name["run throughput, 2 instances / 1"].target is None
    unfinished = by_name["runs of these batches that did not finish, of 2160"]
    assert unfinished.value == 2
    assert unfinished.meets is False
    assert unfinished.note.startswith("1 paused, 1 queued at the end; e.g. on 2 instance(s): ")


def test_the_component_fits_make_bench_s_budget() -> None:
    assert cluster.planned_s(quick=True) < 40
    assert cluster.planned_s(quick=False) < 180
