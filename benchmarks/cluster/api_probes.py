"""Isolation across processes: status reads and event searches on an ``api``
instance while two ``worker`` instances run the isolation component's hardest
workload (2 ms of pure-Python CPU and two tool calls a step), whose GIL is no
longer the api's.

As in :mod:`benchmarks.components.isolation`, the idle p99 the target is judged
by is an idle twin's, probed in the same window in alternation with the loaded
instance: an ``api`` instance on a database of its own, in the same PostgreSQL.
The ratio to the loaded instance's own idle window, seconds before, is printed
beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import httpx
import psycopg

from benchmarks.cluster.shared import GUARD_S, C, instance
from benchmarks.components import isolation
from benchmarks.figures import Figure
from benchmarks.httpraw import ConnectionPool
from benchmarks.probes import (
    Probe,
    ProbeSample,
    conversation_probes,
    probe_once,
    probe_pool,
    probe_stream,
)
from benchmarks.scenario import PROBE_CONVERSATION, WARMUP_PROBES
from benchmarks.server import Server, running_server, running_servers
from benchmarks.stats import Summary
from benchmarks.workload import SimWorkload, StartedRuns, start_runs

if TYPE_CHECKING:
    from tests.pgserver import PostgresServer

LOAD = isolation.WITH_TOOLS_AND_CPU
WORKERS = 2
RUN_LANE = isolation.RUN_LANE
# Every worker's lane full, and as many runs queued behind them as the
# isolation component queues behind its one lane.
RUNS = WORKERS * RUN_LANE + 10 * RUN_LANE
RATE_HZ = isolation.PROBE_RATE_HZ
WINDOW_S = isolation.WINDOW_S
QUICK_WINDOW_S = 2.0
OWN_IDLE_S = isolation.OWN_IDLE_S
QUICK_OWN_IDLE_S = 2.0
# The loaded window opens once every create is answered and the workers'
# lanes are full, or after these guards. A worker takes runs queued through
# the api when it next looks at the queue (laneway.cluster.member.POLL_S, 1 s).
CREATED_GUARD_S = 3.0
FULL_GUARD_S = 3.0
SINGLE_PROCESS = "the single-process design measured 4.5-6.4 for this workload"


def planned_s(quick: bool) -> float:
    return (QUICK_WINDOW_S + QUICK_OWN_IDLE_S) if quick else (WINDOW_S + OWN_IDLE_S)


@dataclass
class Probed:
    # By kind ("status", "search"), then phase ("idle", "loaded", "twin"), in ms.
    by_kind: dict[str, dict[str, Summary]]
    running_at_open: int
    waiting_at_open: int
    steps_per_s: float
    failures: int

    def figures(self) -> list[Figure]:
        subject = f"api instance's (while {WORKERS} workers run) "
        return isolation.probe_figures(self.by_kind, subject, _stall_warning, SINGLE_PROCESS)

    def describe(self) -> str:
        return (
            f"{LOAD.describe()}; {RUNS} created through the api, {self.running_at_open} running "
            f"and {self.waiting_at_open} queued at window open; {self.steps_per_s:.1f} steps/s; "
            f"{RATE_HZ:g} probes/s" + (f"; {self.failures} probes FAILED" if self.failures else "")
        )

    def details(self) -> dict[str, Any]:
        return {
            "by_kind": {
                kind: {phase: asdict(summary) for phase, summary in phases.items()}
                for kind, phases in self.by_kind.items()
            },
            "running_at_open": self.running_at_open,
            "waiting_at_open": self.waiting_at_open,
            "steps_per_s": self.steps_per_s,
            "probe_failures": self.failures,
        }


def _stall_warning(twin_p99: float, idle_p99: float) -> str:
    """A warning when the idle twin was itself much slower than an idle instance.

    Unlike the single process's runs, the workers' CPU is not behind a GIL the
    api shares, but it is on the two cores every process here shares: it, or
    the machine, slows the twin as well, and the ratio then says that the api
    fared as an idle process beside the load did, not as on an idle machine."""
    if twin_p99 <= isolation.STALL_FACTOR * idle_p99:
        return ""
    return (
        f"{SINGLE_PROCESS}; the idle twin's p99 was {twin_p99 / idle_p99:.1f}x the loaded "
        "instance's own idle window's: the workers' CPU on the shared cores, or the machine, "
        "slowed both, so this compares the api with an idle process beside the load"
    )


def measure(pg: PostgresServer, quick: bool, note: Callable[[str], None]) -> Probed:
    loaded_url, twin_url = pg.new_database(), pg.new_database()
    options = [
        instance(loaded_url, "--role", "api"),
        *(instance(loaded_url, "--role", "worker") for _ in range(WORKERS)),
        instance(twin_url, "--role", "api"),
    ]
    note(f"isolation: starting an api, {WORKERS} workers and an idle twin")
    with running_servers(options) as servers:
        api, twin = servers[0], servers[-1]
        # The twin's probe conversation needs a worker to run it, then none.
        with running_server(instance(twin_url, "--role", "worker")):
            twin_cid = _finished_conversation(twin, PROBE_CONVERSATION)
        api_cid = _finished_conversation(api, PROBE_CONVERSATION)
        with psycopg.connect(loaded_url, autocommit=True) as conn:
            return asyncio.run(_windows(api, api_cid, twin, twin_cid, conn, quick, note))


def _finished_conversation(server: Server, workload: SimWorkload) -> str:
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        response = client.post(C, json=workload.create_body())
        response.raise_for_status()
        cid: str = response.json()["id"]
        deadline = time.monotonic() + GUARD_S
        while (status := client.get(f"{C}/{cid}").json()["status"]) != "finished":
            if status in ("error", "stuck", "paused") or time.monotonic() > deadline:
                raise RuntimeError(f"the probe conversation ended {status}")
            time.sleep(0.05)
    return cid


async def _warm_pool(port: int, probes: Sequence[Probe]) -> ConnectionPool:
    """A pool of probe connections, opened, and the server's io threads made."""
    pool = probe_pool(port)
    for index in range(WARMUP_PROBES):
        await probe_once(pool, probes[index % len(probes)])
    return pool


@dataclass(frozen=True)
class _Load:
    at: float
    tool_calls: int
    running: int
    waiting: int


def _load(conn: psycopg.Connection[Any]) -> _Load:
    """The tool calls stored so far, and the runs running and queued, now."""
    tools = conn.execute("SELECT count(*) FROM events WHERE kind = 'tool_call'").fetchone()
    runs = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'running'),"
        " count(*) FILTER (WHERE status = 'queued' AND owner IS NULL) FROM conversations"
    ).fetchone()
    assert tools is not None
    assert runs is not None
    return _Load(time.perf_counter(), int(tools[0]), int(runs[0]), int(runs[1]))


async def _until_running(conn: psycopg.Connection[Any], runs: int, guard_s: float) -> None:
    deadline = time.monotonic() + guard_s
    while _load(conn).running < runs and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _windows(
    api: Server,
    api_cid: str,
    twin: Server,
    twin_cid: str,
    conn: psycopg.Connection[Any],
    quick: bool,
    note: Callable[[str], None],
) -> Probed:
    own_idle_s = QUICK_OWN_IDLE_S if quick else OWN_IDLE_S
    window_s = QUICK_WINDOW_S if quick else WINDOW_S
    probes, twin_probes = conversation_probes(api_cid), conversation_probes(twin_cid)
    pool = await _warm_pool(api.port, probes)
    twin_pool = await _warm_pool(twin.port, twin_probes)
    # Runs are created on a client of their own: its connections delay no probe.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=100)
    load_client = httpx.AsyncClient(base_url=api.base_url, limits=limits, timeout=GUARD_S)
    try:
        note(f"isolation: idle probes for {own_idle_s:g} s")
        (idle,) = await probe_stream([(pool, probes)], RATE_HZ, own_idle_s)
        note(f"isolation: creating {RUNS} runs")
        started = StartedRuns()
        creating = asyncio.create_task(start_runs(load_client, LOAD, RUNS, started))
        await asyncio.wait({creating}, timeout=CREATED_GUARD_S)
        await _until_running(conn, WORKERS * RUN_LANE, FULL_GUARD_S)
        note(f"isolation: probes for {window_s:g} s, loaded and twin in turn")
        opened = _load(conn)
        loaded, twin_idle = await probe_stream(
            [(pool, probes), (twin_pool, twin_probes)], RATE_HZ, window_s
        )
        closed = _load(conn)
        creating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await creating
        if started.created != RUNS:
            raise RuntimeError(
                f"{started.created} of {RUNS} runs created ({started.rejected} refused, "
                f"{started.failed} failed) by the window's end"
            )
    finally:
        await load_client.aclose()
        await pool.close()
        await twin_pool.close()
    samples = {"idle": idle, "loaded": loaded, "twin": twin_idle}
    return Probed(
        by_kind={
            kind: {phase: _summary(found, kind) for phase, found in samples.items()}
            for kind in ("status", "search")
        },
        running_at_open=opened.running,
        waiting_at_open=opened.waiting,
        steps_per_s=(closed.tool_calls - opened.tool_calls)
        / LOAD.tools_per_step
        / (closed.at - opened.at),
        failures=sum(not s.ok for found in samples.values() for s in found),
    )


def _summary(samples: Sequence[ProbeSample], kind: str) -> Summary:
    """Latency in milliseconds of the probes of ``kind`` answered 200."""
    return Summary.of([s.latency_s * 1000 for s in samples if s.ok and s.kind == kind])
