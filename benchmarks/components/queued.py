"""10,000 queued runs: the threads they cost (none beyond the lanes') and the
memory each one holds while it waits.

A server with a run lane of 10 gets 10 conversations whose single step blocks
for minutes, then the rest, which all queue behind them. Memory per queued run
is the growth of the server's resident set from "10 running" to "all queued",
divided by the number queued. The creates go over raw keep-alive connections,
many at once, so that making 10,000 of them fits the time budget.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import httpx

from benchmarks.figures import ComponentResult, Figure
from benchmarks.httpraw import RawConnection
from benchmarks.server import ProcStatus, Server, ServerOptions, running_server
from benchmarks.workload import CONVERSATIONS, SimWorkload

# 10,000 creates over HTTP take ~40 s on a 2-core machine (the server answers
# about 250 a second, whatever the concurrency), so the 5-minute budget allows
# this on one backend only.
BACKEND = "asyncio"
RUN_LANE = 10
MAX_WAITING = 20_000
# Longer than the whole measurement, so the first 10 runs never free their tokens.
HOLD_MS = 120_000
HOLDING = SimWorkload(steps=1, think_ms=HOLD_MS, cpu_ms=0, tools_per_step=0, tool_ms=0)
CONNECTIONS = 32
CREATE_GUARD_S = 90.0
SETTLE_S = 0.5
TARGET_PER_RUN_KIB = 16.0
# On SIGTERM the server pauses the queued runs in one write and leaves the ten
# blocked ones behind at the end of its grace period; it must exit within the
# grace plus this. A server still running after STOP_GUARD_S is killed.
GRACE_S = 1.0
STOP_MARGIN_S = 0.5
STOP_GUARD_S = 10.0


@dataclass
class CreateCounts:
    created: int = 0
    rejected: int = 0
    other: int = 0


async def create_many(port: int, count: int, connections: int) -> CreateCounts:
    counts = CreateCounts()
    body = json.dumps(HOLDING.create_body()).encode()
    remaining = [count]

    async def worker() -> None:
        conn = await RawConnection.connect(port)
        try:
            while remaining[0] > 0:
                remaining[0] -= 1
                status = await conn.request("POST", CONVERSATIONS, body)
                if status == 201:
                    counts.created += 1
                elif status == 429:
                    counts.rejected += 1
                else:
                    counts.other += 1
        finally:
            await conn.close()

    async with asyncio.timeout(CREATE_GUARD_S), asyncio.TaskGroup() as tg:
        for _ in range(min(connections, count)):
            tg.create_task(worker())
    return counts


def _run_lane(server: Server) -> dict[str, int]:
    response = httpx.get(server.base_url + "/api/lanes", timeout=10.0)
    response.raise_for_status()
    lane: dict[str, int] = response.json()["lanes"]["run"]
    return lane


def _settled(server: Server) -> ProcStatus:
    time.sleep(SETTLE_S)
    status = server.sampler.sample()
    if status is None:
        raise RuntimeError(f"the server died:\n{server.log_tail()}")
    return status


def _wait_running(server: Server, running: int, waiting: int) -> dict[str, int]:
    deadline = time.monotonic() + 10.0
    while True:
        lane = _run_lane(server)
        if lane["running"] >= running and lane["waiting"] >= waiting:
            return lane
        if time.monotonic() > deadline:
            raise RuntimeError(f"run lane never reached {running} running, {waiting} waiting")
        time.sleep(0.05)


def run(quick: bool) -> ComponentResult:
    total = 1_000 if quick else 10_000
    queued = total - RUN_LANE
    options = ServerOptions(
        backend=BACKEND,
        run_lane_size=RUN_LANE,
        run_max_waiting=MAX_WAITING,
        shutdown_grace_s=GRACE_S,
        stop_guard_s=STOP_GUARD_S,
    )
    with running_server(options) as server:
        at_ready = _settled(server)
        first = asyncio.run(create_many(server.port, RUN_LANE, RUN_LANE))
        _wait_running(server, RUN_LANE, 0)
        before = _settled(server)
        started = time.perf_counter()
        rest = asyncio.run(create_many(server.port, queued, CONNECTIONS))
        create_s = time.perf_counter() - started
        lane = _wait_running(server, RUN_LANE, rest.created)
        after = _settled(server)
        peak_threads = server.sampler.peak_threads
    lane_sizes = RUN_LANE + options.tool_lane_size + options.io_lane_size
    constant = at_ready.threads
    per_run_kib = (after.rss_kib - before.rss_kib) / max(rest.created, 1)
    size_note = f"{queued:,} queued" + (" (quick: 10,000 in the full run)" if quick else "")
    problems = []
    if server.killed:
        problems.append(
            f"the server did not exit within {STOP_GUARD_S:g} s of SIGTERM and was killed"
        )
    if first.created != RUN_LANE or rest.created != queued:
        problems.append(
            f"created {first.created + rest.created} of {total}: {rest.rejected + first.rejected} "
            f"rejected (429), {rest.other + first.other} other answers"
        )
    return ComponentResult(
        name=f"queued runs, {BACKEND}",
        method=(
            f"{BACKEND} only (creating the runs takes most of a minute, so the time budget "
            "allows one backend); "
            f"run lane {RUN_LANE}, --run-max-waiting {MAX_WAITING}; {RUN_LANE} runs blocked "
            f"in a {HOLD_MS / 1000:g} s step, then {size_note}, created over {CONNECTIONS} "
            f"connections in {create_s:.1f} s ({queued / create_s:,.0f}/s); run lane then "
            f"{lane['running']} running, {lane['waiting']} waiting (bound {lane['max_waiting']})"
            + ("; " + "; ".join(problems) if problems else "")
        ),
        figures=[
            Figure(
                f"threads at peak (lanes {RUN_LANE}+{options.tool_lane_size}+"
                f"{options.io_lane_size}={lane_sizes}, plus the {constant} the server had "
                "when ready)",
                peak_threads,
                "threads",
                lane_sizes + constant,
                "lower",
            ),
            Figure(
                f"memory per queued run (RSS {before.rss_kib / 1024:.1f} MiB with {RUN_LANE} "
                f"running, {after.rss_kib / 1024:.1f} MiB with {size_note}; includes SQLite's "
                "page cache growing with the new rows)",
                per_run_kib,
                "KiB",
                TARGET_PER_RUN_KIB,
                "lower",
                strict=True,
            ),
            Figure(
                f"exit after SIGTERM with {size_note} and {RUN_LANE} blocked, grace {GRACE_S:g} s",
                server.stop_s,
                "s",
                GRACE_S + STOP_MARGIN_S,
                "lower",
            ),
        ],
        details={
            "total": total,
            "created": first.created + rest.created,
            "rejected": first.rejected + rest.rejected,
            "other": first.other + rest.other,
            "create_s": create_s,
            "threads_at_ready": at_ready.threads,
            "peak_threads": peak_threads,
            "rss_kib_at_ready": at_ready.rss_kib,
            "rss_kib_running": before.rss_kib,
            "rss_kib_queued": after.rss_kib,
            "run_lane": {k: lane[k] for k in ("running", "waiting", "peak_waiting", "rejected")},
            "server_killed_at_stop": server.killed,
            "stop_s": server.stop_s,
        },
    )
