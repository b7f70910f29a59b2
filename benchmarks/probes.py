"""Short requests sent at a fixed rate, each timed on its own.

Probes are open-loop: each is sent at its scheduled time whether or not the
earlier ones have been answered, so one slow answer cannot hide the slowness
of the ones that would have followed it. They go over raw keep-alive
connections (see :mod:`benchmarks.httpraw`), so the client adds little.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.httpraw import ConnectionPool, HttpError

# Long enough for the shared pool's worst queue; a probe past it counts as failed.
PROBE_TIMEOUT_S = 30.0
# The most probes in flight at once: 100 a second starved for 10 s.
MAX_CONNECTIONS = 1000


@dataclass(frozen=True)
class Probe:
    kind: str
    path: str


@dataclass(frozen=True)
class ProbeSample:
    kind: str
    latency_s: float
    ok: bool


def conversation_probes(conversation_id: str) -> list[Probe]:
    """A status read and an event search on one conversation."""
    base = f"/api/conversations/{conversation_id}"
    return [Probe("status", base), Probe("search", base + "/events?kind=message&limit=50")]


def probe_pool(port: int) -> ConnectionPool:
    return ConnectionPool(port, MAX_CONNECTIONS)


async def probe_once(pool: ConnectionPool, probe: Probe) -> ProbeSample:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S), pool.connection() as conn:
            ok = await conn.request("GET", probe.path) == 200
    except (TimeoutError, OSError, HttpError, asyncio.IncompleteReadError):
        ok = False
    return ProbeSample(probe.kind, time.perf_counter() - started, ok)


async def probe_stream(
    targets: Sequence[tuple[ConnectionPool, Sequence[Probe]]], rate_hz: float, duration_s: float
) -> list[list[ProbeSample]]:
    """Send each target ``rate_hz`` probes a second for ``duration_s``, taking its
    kinds in turn; return each target's samples once every probe has been
    answered or has timed out.

    With several targets, their probes alternate at even spacing, so that every
    target sees the same moments of the machine's noise, and no two probes
    arrive at once."""
    samples: list[list[ProbeSample]] = [[] for _ in targets]
    per_target = round(rate_hz * duration_s)
    tick_s = 1 / (rate_hz * len(targets))
    start = time.perf_counter()

    async def one(target: int, probe: Probe) -> None:
        pool, _ = targets[target]
        samples[target].append(await probe_once(pool, probe))

    async with asyncio.TaskGroup() as tg:
        for tick in range(per_target * len(targets)):
            delay = start + tick * tick_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            index, target = divmod(tick, len(targets))
            probes = targets[target][1]
            tg.create_task(one(target, probes[index % len(probes)]))
    return samples
