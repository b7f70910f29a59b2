"""Fan-out: one conversation followed by 1,000 SSE subscribers while its run
produces events (a 50 ms step with two tool calls, 50 steps).

Three passes on one server, each run on a conversation of its own: the run with
nobody following; the run with the subscribers following (from another
process, :mod:`benchmarks.subscribers`), for the server's CPU per delivered
event and the run's time; and again with the subscribers, while status reads
of another conversation are probed. The idle p99 those are judged against is a
twin server's, idle, probed in the same window in alternation (as the
isolation component does), since on two cores the subscribers' own process
takes CPU from everything on the machine; the ratio to the loaded server's own
idle window, just before, is printed beside it. Run times come from the
server's own timestamps of the run's ``running`` and ``finished`` statuses;
CPU from /proc/PID/stat.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.figures import ComponentResult, Figure
from benchmarks.probes import Probe, probe_pool, probe_stream
from benchmarks.server import Server, ServerOptions, running_server
from benchmarks.stats import percentile

SUBSCRIBERS = 1000
QUICK_SUBSCRIBERS = 300
SIM = {"steps": 50, "think_ms": 50, "tools_per_step": 2, "tool_ms": 0}
# The probed run is longer, for 1,000 probes in its window: with fewer, a p99
# is little more than the slowest two or three.
PROBED_STEPS = 200
CPU_TARGET_US = 10.0
RUN_TARGET = 1.5
PROBE_TARGET = 1.5
PROBE_RATE_HZ = 100.0
IDLE_PROBE_S = 3.0
RUN_GUARD_S = 120.0
_TICK_S = 1 / os.sysconf("SC_CLK_TCK")
# Seconds of the component beyond its runs: servers starting, streams connecting.
_OVERHEAD_S = 12.0


def _probed_steps(quick: bool) -> int:
    return SIM["steps"] if quick else PROBED_STEPS


def planned_s(quick: bool) -> float:
    run_s = SIM["steps"] * SIM["think_ms"] / 1000
    return _OVERHEAD_S + IDLE_PROBE_S + run_s * (2 + _probed_steps(quick) / SIM["steps"])


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _run_seconds(client: httpx.Client, cid: str) -> tuple[float, int]:
    """The run's time by the server's clock, and how many events it has."""
    events = client.get(f"/api/conversations/{cid}/events", params={"limit": 500}).json()["items"]
    stamps = {e["data"]["status"]: e["timestamp"] for e in events if e["kind"] == "status"}
    return _stamp(stamps["finished"]) - _stamp(stamps["running"]), len(events)


def _wait_finished(client: httpx.Client, cid: str) -> None:
    deadline = time.monotonic() + RUN_GUARD_S
    while client.get(f"/api/conversations/{cid}").json()["status"] != "finished":
        if time.monotonic() > deadline:
            raise RuntimeError("the run did not finish in time")
        time.sleep(0.05)


def _create(client: httpx.Client, steps: int = SIM["steps"]) -> str:
    body = {"agent": {"kind": "sim", "config": {**SIM, "steps": steps}}, "run": False}
    response = client.post("/api/conversations", json=body)
    response.raise_for_status()
    cid: str = response.json()["id"]
    return cid


class _Followed:
    """A conversation with ``count`` subscribers connected from another process."""

    def __init__(
        self, server: Server, client: httpx.Client, count: int, steps: int = SIM["steps"]
    ) -> None:
        self.cid = _create(client, steps)
        cmd = [sys.executable, "-m", "benchmarks.subscribers", "--port", str(server.port)]
        cmd += ["--path", f"/api/conversations/{self.cid}/events/stream"]
        cmd += ["--count", str(count)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "connected":
            self.proc.kill()
            raise RuntimeError(f"subscribers did not connect: {line!r}")

    def results(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        if self.proc.wait(RUN_GUARD_S) != 0:
            raise RuntimeError("the subscriber process failed")
        found: dict[str, Any] = json.loads(out)
        return found


def _probe(targets: list[tuple[int, str]], seconds: float) -> list[list[float]]:
    """Status reads of each (port, conversation), in alternation; their latencies."""

    async def go() -> list[list[float]]:
        pools = [probe_pool(port) for port, _ in targets]
        try:
            found = await probe_stream(
                [
                    (pool, [Probe("status", f"/api/conversations/{cid}")])
                    for pool, (_, cid) in zip(pools, targets, strict=True)
                ],
                PROBE_RATE_HZ,
                seconds,
            )
        finally:
            for pool in pools:
                await pool.close()
        if not all(s.ok for samples in found for s in samples):
            raise RuntimeError("a status probe failed")
        return [[s.latency_s for s in samples] for samples in found]

    return asyncio.run(go())


def run(quick: bool, backend: str, note: Callable[[str], None]) -> ComponentResult:
    count = QUICK_SUBSCRIBERS if quick else SUBSCRIBERS
    options = ServerOptions(backend=backend)
    with (
        running_server(options) as server,
        running_server(options) as twin,
        httpx.Client(base_url=server.base_url, timeout=30.0) as client,
    ):
        other = _create(client)
        with httpx.Client(base_url=twin.base_url, timeout=30.0) as twin_client:
            twin_other = _create(twin_client)
        note("alone")
        alone = _create(client)
        client.post(f"/api/conversations/{alone}/run").raise_for_status()
        _wait_finished(client, alone)
        alone_s, events = _run_seconds(client, alone)

        note(f"{count} subscribers connecting")
        followed = _Followed(server, client, count)
        note(f"{count} subscribers")
        cpu_before = _cpu_s(server.pid)
        client.post(f"/api/conversations/{followed.cid}/run").raise_for_status()
        got = followed.results()
        cpu_s = _cpu_s(server.pid) - cpu_before
        followed_s, followed_events = _run_seconds(client, followed.cid)
        complete = all(s == list(range(1, followed_events + 1)) for s in got["seqs"])
        lag_s = max(got["ended"]) - min(got["ended"])

        note("status reads, idle")
        [idle] = _probe([(server.port, other)], IDLE_PROBE_S)
        note("status reads, followed run")
        probed = _Followed(server, client, count, _probed_steps(quick))
        client.post(f"/api/conversations/{probed.cid}/run").raise_for_status()
        window_s = alone_s * _probed_steps(quick) / SIM["steps"] * 0.9
        loaded, twin_idle = _probe([(server.port, other), (twin.port, twin_other)], window_s)
        probed.results()
    delivered = followed_events * count
    cpu_us = cpu_s / delivered * 1e6
    idle_p99, loaded_p99 = percentile(idle, 0.99), percentile(loaded, 0.99)
    twin_p99 = percentile(twin_idle, 0.99)
    name = f"fan-out, {backend}"
    return ComponentResult(
        name=name,
        method=(
            f"{count} SSE subscribers (another process) on one conversation; sim "
            f"{SIM['steps']} steps of {SIM['think_ms']} ms with {SIM['tools_per_step']} tool "
            f"calls; status reads of another conversation at {PROBE_RATE_HZ:g}/s"
        ),
        figures=[
            Figure(
                "server CPU per delivered event",
                cpu_us,
                "µs",
                CPU_TARGET_US,
                "lower",
                note=f"{cpu_s:.2f} s CPU for {followed_events} events x {count} subscribers; "
                f"every subscriber got every event in order: {complete}",
            ),
            Figure(
                "run time followed / alone",
                followed_s / alone_s,
                "",
                RUN_TARGET,
                "lower",
                note=f"{followed_s:.2f} s / {alone_s:.2f} s, {events} events; last subscriber "
                f"done {lag_s * 1000:.0f} ms after the first",
            ),
            Figure(
                "status read p99 while followed / idle twin's p99, side by side",
                loaded_p99 / twin_p99,
                "",
                PROBE_TARGET,
                "lower",
                note=f"{loaded_p99 * 1000:.2f} / {twin_p99 * 1000:.2f} ms; p50 "
                f"{statistics.median(loaded) * 1000:.2f} / "
                f"{statistics.median(twin_idle) * 1000:.2f} ms; {len(loaded)} / "
                f"{len(twin_idle)} probes",
            ),
            Figure(
                "status read p99 while followed / its own idle window's p99",
                loaded_p99 / idle_p99,
                "",
                note=f"{idle_p99 * 1000:.2f} ms idle, p50 {statistics.median(idle) * 1000:.2f} "
                f"ms, {len(idle)} probes, just before; for comparison",
            ),
        ],
        details={
            "cpu_s": cpu_s,
            "events": followed_events,
            "subscribers": count,
            "complete": complete,
            "alone_s": alone_s,
            "followed_s": followed_s,
            "idle_ms": [x * 1000 for x in idle],
            "loaded_ms": [x * 1000 for x in loaded],
            "twin_ms": [x * 1000 for x in twin_idle],
        },
    )
