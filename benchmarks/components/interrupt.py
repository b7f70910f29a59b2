"""Interrupt latency: from ``POST /interrupt`` to the ``paused`` status, for a run
whose sim step thinks for 30 s, against a pause of the same kind of run, which
waits for the step to end (measured only up to a bound, to keep the bench short).

The paused status is read from an SSE stream opened before the interrupt, so the
figure is what a follower sees, not a poll's granularity.
"""

from __future__ import annotations

import statistics
import time

import httpx

from benchmarks.figures import ComponentResult, Figure
from benchmarks.server import Server, ServerOptions, running_server

TARGET_MS = 100.0
THINK_MS = 30_000
ROUNDS = 10
QUICK_ROUNDS = 3
# A pause waits for the step; the bench gives up on it after this.
PAUSE_BOUND_S = 2.0
C = "/api/conversations"


def _stepping(client: httpx.Client) -> str:
    body = {"agent": {"kind": "sim", "config": {"steps": 3, "think_ms": THINK_MS}},
            "initial_message": "go"}  # fmt: skip
    cid: str = client.post(C, json=body).raise_for_status().json()["id"]
    deadline = time.monotonic() + 10
    while client.get(f"{C}/{cid}").json()["status"] != "running":
        if time.monotonic() > deadline:
            raise RuntimeError("the run never started")
        time.sleep(0.005)
    time.sleep(0.1)  # into its step
    return cid


def until_paused(client: httpx.Client, cid: str, action: str, bound_s: float) -> float:
    """Seconds from ``POST /{action}`` to the paused status on a live stream; nan
    past ``bound_s``."""
    url = f"{C}/{cid}/events/stream"
    page = client.get(f"{C}/{cid}/events", params={"order": "desc", "limit": 1}).json()
    after = page["items"][0]["seq"]
    with client.stream("GET", url, params={"after_seq": after}, timeout=bound_s) as stream:
        started = time.perf_counter()
        client.post(f"{C}/{cid}/{action}").raise_for_status()
        try:
            for line in stream.iter_lines():
                if '"status":"paused"' in line:
                    return time.perf_counter() - started
                if time.perf_counter() - started > bound_s:
                    break
        except httpx.ReadTimeout:
            pass  # nothing at all came within the bound
    return float("nan")


def _measure(server: Server, rounds: int) -> tuple[list[float], float]:
    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
        interrupts = [until_paused(client, _stepping(client), "interrupt", 5.0)
                      for _ in range(rounds)]  # fmt: skip
        cid = _stepping(client)
        pause = until_paused(client, cid, "pause", PAUSE_BOUND_S)
        client.post(f"{C}/{cid}/interrupt")
    return interrupts, pause


def run(quick: bool, backend: str) -> ComponentResult:
    rounds = QUICK_ROUNDS if quick else ROUNDS
    with running_server(ServerOptions(backend=backend)) as server:
        interrupts, pause = _measure(server, rounds)
    ms = sorted(s * 1000 for s in interrupts)
    pause_note = (
        f"a pause of the same run: not paused after {PAUSE_BOUND_S:g} s (it waits for the step)"
        if pause != pause
        else f"a pause of the same run: {pause * 1000:.0f} ms"
    )
    return ComponentResult(
        name=f"interrupt, {backend}",
        method=(
            f"sim run stepping with think_ms {THINK_MS}; POST /interrupt to the paused status "
            f"on an SSE stream opened before it; {rounds} runs, one after another"
        ),
        figures=[
            Figure(
                "interrupt to paused, worst",
                ms[-1],
                "ms",
                TARGET_MS,
                "lower",
                note=f"median {statistics.median(ms):.1f} ms; {pause_note}",
            )
        ],
        details={"interrupt_ms": ms, "pause_s": pause},
    )
