"""One server configuration measured end to end: probes idle, then probes while
runs load the server.

The phases, on a fresh server:

1. a probe conversation is created and run to the end, so that probes read a
   conversation with a full page of messages;
2. idle: probes at a fixed rate, nothing else running;
3. the load: ``runs`` sim conversations are created at once, all with run=true;
   the loaded window opens once every create has been answered, so that it
   measures the runs rather than the burst of creates, or after
   ``OPEN_GUARD_S`` at most: with one shared pool the creates themselves wait
   behind the runs, and that starvation is part of what is measured;
4. loaded: the same probes for ``loaded_s``, while the lanes are read at the
   window's start and end for run throughput and run queue wait.

With ``twin``, a second server of the same configuration, given only its own
probe conversation, is probed in the loaded window too, its probes alternating
with the loaded server's. Its latencies are the idle figures taken side by side
with the loaded ones: the two windows of one server are seconds apart, and the
machine's noise (CPU steal above all) differs between them by more than a few
slow probes, which is all a p99 is.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks.httpraw import ConnectionPool
from benchmarks.machine import CpuTimes
from benchmarks.probes import (
    Probe,
    ProbeSample,
    conversation_probes,
    probe_once,
    probe_pool,
    probe_stream,
)
from benchmarks.server import Server, ServerOptions, running_server
from benchmarks.stats import Histogram, Summary
from benchmarks.workload import SimWorkload, StartedRuns, start_runs, wait_finished

PROBE_CONVERSATION = SimWorkload(steps=60, think_ms=0, cpu_ms=0, tools_per_step=2, tool_ms=0)
WARMUP_PROBES = 20
OPEN_GUARD_S = 3.0
SETUP_GUARD_S = 15.0
HTTPX_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Scenario:
    label: str
    server: ServerOptions
    workload: SimWorkload
    runs: int
    idle_s: float
    loaded_s: float
    probe_rate_hz: float
    twin: bool = False

    @property
    def planned_s(self) -> float:
        """The phases plus the usual start, setup and stop time, for the ETA. With a
        shared pool, the last probes are answered long after the window closes."""
        starved = 2 * self.loaded_s if self.server.lanes_mode == "shared" else 0.0
        return self.idle_s + self.loaded_s + starved + 3.0


@dataclass
class ScenarioResult:
    label: str
    backend: str
    mode: str
    run_lane_size: int
    runs: int
    idle: Summary
    loaded: Summary
    steps_per_s: float
    wait_p50_s: float
    wait_p99_s: float
    rejected_http: int
    rejected_lane: int
    failed_creates: int
    # Creates still waiting for an answer when the window closed.
    unanswered_creates: int
    probe_failures: int
    # From the first create to the window's opening, and the run lane then.
    open_s: float
    running_at_open: int
    waiting_at_open: int
    peak_threads: int
    peak_rss_mib: float
    hwm_mib: float
    server_killed: bool
    # Share of the machine's CPU time taken by the host while this ran.
    steal_percent: float
    # Per probe kind, the phases "idle" and "loaded", and "twin" with a twin.
    by_kind: dict[str, dict[str, Summary]] = field(default_factory=dict)

    @property
    def isolation_ratio(self) -> float:
        """Loaded p99 over idle p99: 1.0 means the load changed nothing."""
        return self.loaded.p99 / self.idle.p99 if self.idle.p99 > 0 else math.nan


@dataclass(frozen=True)
class _LaneReading:
    at: float
    lanes: dict[str, Any]


async def _read_lanes(client: httpx.AsyncClient) -> _LaneReading:
    # /api/lanes is answered on the event loop without any lane, so the reading is
    # prompt even when every token is taken.
    at = time.perf_counter()
    response = await client.get("/api/lanes")
    response.raise_for_status()
    return _LaneReading(at, response.json()["lanes"])


def run_scenario(scenario: Scenario, note: Callable[[str], None]) -> ScenarioResult:
    cpu = CpuTimes.now()
    twin_server = running_server(scenario.server) if scenario.twin else contextlib.nullcontext()
    with running_server(scenario.server) as server, twin_server as twin:
        result = asyncio.run(_measure(scenario, server, twin, note))
        note("stopping the server")
        status = server.sampler.sample()
    result.peak_threads = server.sampler.peak_threads
    result.peak_rss_mib = server.sampler.peak_rss_kib / 1024
    result.hwm_mib = status.hwm_kib / 1024 if status is not None else math.nan
    result.server_killed = server.killed
    result.steal_percent = CpuTimes.now().steal_percent_since(cpu)
    return result


def _client(base_url: str) -> httpx.AsyncClient:
    # Every create of the load is in flight at once.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=100)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=HTTPX_TIMEOUT_S)


async def _probe_target(server: Server) -> tuple[ConnectionPool, list[Probe]]:
    """A pool of probe connections to ``server``, and its probes, on a conversation
    of its own that has run to the end."""
    async with _client(server.base_url) as client:
        response = await client.post("/api/conversations", json=PROBE_CONVERSATION.create_body())
        response.raise_for_status()
        conversation_id = response.json()["id"]
        await wait_finished(client, conversation_id, SETUP_GUARD_S)
    pool = probe_pool(server.port)
    probes = conversation_probes(conversation_id)
    # Opens the connections and the io lane's threads, which are not what is measured.
    for index in range(WARMUP_PROBES):
        await probe_once(pool, probes[index % len(probes)])
    return pool, probes


async def _measure(
    scenario: Scenario, server: Server, twin: Server | None, note: Callable[[str], None]
) -> ScenarioResult:
    workload = scenario.workload
    note("setting up the probe conversation" + ("s" if twin is not None else ""))
    target = await _probe_target(server)
    targets = [target] if twin is None else [target, await _probe_target(twin)]
    probes = target[1]
    # Runs are created on their own client, so their connections never delay a probe.
    async with _client(server.base_url) as client, _client(server.base_url) as load_client:
        note(f"idle probes for {scenario.idle_s:g} s")
        rate = scenario.probe_rate_hz
        (idle,) = await probe_stream([target], rate, scenario.idle_s)

        note(f"starting {scenario.runs} runs")
        before = await _read_lanes(client)
        load_started = time.perf_counter()
        started = StartedRuns()
        load = asyncio.create_task(start_runs(load_client, workload, scenario.runs, started))
        await asyncio.wait({load}, timeout=OPEN_GUARD_S)
        open_s = time.perf_counter() - load_started

        note(f"loaded probes for {scenario.loaded_s:g} s")
        start = await _read_lanes(client)

        async def read_at_window_end() -> _LaneReading:
            await asyncio.sleep(scenario.loaded_s)
            return await _read_lanes(client)

        end_task = asyncio.create_task(read_at_window_end())
        loaded, *twin_idle = await probe_stream(targets, rate, scenario.loaded_s)
        end = await end_task
        load.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await load
        for each_pool, _ in targets:
            await each_pool.close()

    completed_tools = end.lanes["tool"]["completed"] - start.lanes["tool"]["completed"]
    # Every step asks for tools_per_step tool calls, so finished tool calls count
    # finished steps without asking the (possibly starved) io lane; a workload
    # without tools leaves throughput unmeasured.
    steps_per_s = (
        completed_tools / workload.tools_per_step / (end.at - start.at)
        if workload.tools_per_step
        else math.nan
    )
    waits = Histogram.from_json(end.lanes["run"]["wait_time"]).minus(
        Histogram.from_json(before.lanes["run"]["wait_time"])
    )
    options = scenario.server
    return ScenarioResult(
        label=scenario.label,
        backend=options.backend,
        mode=options.lanes_mode,
        run_lane_size=end.lanes["run"]["size"],
        runs=scenario.runs,
        idle=_summary(idle),
        loaded=_summary(loaded),
        steps_per_s=steps_per_s,
        wait_p50_s=waits.quantile(0.5),
        wait_p99_s=waits.quantile(0.99),
        rejected_http=started.rejected,
        rejected_lane=end.lanes["run"]["rejected"] - before.lanes["run"]["rejected"],
        failed_creates=started.failed,
        unanswered_creates=scenario.runs - started.created - started.rejected - started.failed,
        probe_failures=sum(not s.ok for samples in (idle, loaded, *twin_idle) for s in samples),
        open_s=open_s,
        running_at_open=start.lanes["run"]["running"],
        waiting_at_open=start.lanes["run"]["waiting"],
        peak_threads=0,
        peak_rss_mib=math.nan,
        hwm_mib=math.nan,
        server_killed=False,
        steal_percent=math.nan,
        by_kind={
            kind: {"idle": _summary(idle, kind), "loaded": _summary(loaded, kind)}
            | ({"twin": _summary(twin_idle[0], kind)} if twin_idle else {})
            for kind in sorted({p.kind for p in probes})
        },
    )


def _summary(samples: list[ProbeSample], kind: str | None = None) -> Summary:
    """Latency in milliseconds of the probes (of one kind) that were answered 200."""
    return Summary.of(
        [s.latency_s * 1000 for s in samples if s.ok and (kind is None or s.kind == kind)]
    )
