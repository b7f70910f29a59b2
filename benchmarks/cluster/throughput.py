"""Run throughput of 1, 2 and 3 instances, each with 8 run tokens, so that the
tokens grow with the instances.

Three databases side by side, one per instance count, all their instances
started at once: a batch of sim runs with I/O-bound steps is created through
a count's instances in turn, and timed from the first create to the last run's
final status (the server's own stamp). The counts are measured in alternating
order, round after round (1 2 3, 3 2 1, ...), so that a drift of the machine
falls on all of them.

Every run should finish. One that ends otherwise, or stops getting anywhere,
is not a failed measurement but a finding: it is counted in a figure of its
own, with its statuses and its lease, and the batch is timed without it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from benchmarks.cluster.shared import GUARD_S, C, fetch_one, instance, stamp
from benchmarks.figures import Figure
from benchmarks.httpraw import RawConnection
from benchmarks.machine import CpuTimes
from benchmarks.server import Server, running_servers
from benchmarks.workload import SimWorkload

if TYPE_CHECKING:
    from tests.pgserver import PostgresServer

# I/O-bound: a step blocks 40 ms (an LLM call), then makes one 20 ms tool call.
WORKLOAD = SimWorkload(steps=4, think_ms=40, cpu_ms=0, tools_per_step=1, tool_ms=20)
LANE = 8
COUNTS = (1, 2, 3)
# 30 and 12 waves of one instance's 8 tokens, 10 and 4 of three instances' 24.
BATCH = 240
QUICK_BATCH = 96
ROUNDS = 3
QUICK_ROUNDS = 1
# Three instances hold three times the run tokens of one; see scaling_note.
SCALING_TARGET = 2.0
# Keep-alive connections each instance's share of a batch is created on.
CREATORS_PER_INSTANCE = 4
POLL_S = 0.05
# No run of a batch ended for this long, with runs left: those are stuck.
STALL_S = 10.0
FINAL = ("finished", "paused", "error", "stuck")
_FINAL_SQL = ", ".join(f"'{status}'" for status in FINAL)


def planned_s(quick: bool) -> float:
    """The batches' time if each token ran runs back to back."""
    batch, rounds = (QUICK_BATCH, QUICK_ROUNDS) if quick else (BATCH, ROUNDS)
    run_s = WORKLOAD.steps * (WORKLOAD.think_ms + WORKLOAD.tool_ms) / 1000
    return rounds * sum(batch / (n * LANE) * run_s for n in COUNTS)


def round_orders(rounds: int, counts: Sequence[int]) -> list[list[int]]:
    """The order the instance counts are measured in, round by round: forward,
    then backward, and so on."""
    return [list(counts) if r % 2 == 0 else list(reversed(counts)) for r in range(rounds)]


def scaling_note() -> str:
    return (
        f"{WORKLOAD.describe()}; target: three instances hold three times the run tokens, so "
        "I/O-bound runs could go 3x; 2x leaves a third for the two cores that three servers, "
        "PostgreSQL and the client share, and still shows that the shared queue and its "
        "leases do not serialize the instances"
    )


@dataclass
class Throughput:
    batch: int
    # Runs per second, by instance count, one per round.
    rates: dict[int, list[float]]
    # The share of the machine's CPU time spent working meanwhile, likewise.
    busy: dict[int, list[float]]
    # Runs each instance set running, by instance count, most first.
    taken: dict[int, list[int]]
    # The runs that did not finish, by instance count: each one's status at the
    # end, and a description of its lease and statuses.
    unfinished: dict[int, list[tuple[str, str]]]

    def median(self, count: int) -> float:
        return statistics.median(self.rates[count])

    def figures(self) -> list[Figure]:
        one = self.median(1)
        found = [
            Figure(
                f"run throughput, {n} instance{'s' if n > 1 else ''} ({n * LANE} run tokens)",
                self.median(n),
                "runs/s",
                note=f"{_rounds(self.rates[n])}; runs taken per instance "
                + "/".join(str(t) for t in self.taken[n])
                + f"; the machine's CPU {statistics.median(self.busy[n]):.0f}% busy",
            )
            for n in self.rates
        ]
        found.append(
            Figure("run throughput, 2 instances / 1", self.median(2) / one, "", note="no target")
        )
        found.append(
            Figure(
                "run throughput, 3 instances / 1",
                self.median(3) / one,
                "",
                SCALING_TARGET,
                "higher",
                note=scaling_note(),
            )
        )
        found.append(self._unfinished_figure())
        return found

    def _unfinished_figure(self) -> Figure:
        runs = [(n, *run) for n, found in self.unfinished.items() for run in found]
        note = "every run should finish"
        if runs:
            by_status = Counter(status for _, status, _ in runs)
            n, _, text = runs[0]
            note = (
                ", ".join(f"{count} {status}" for status, count in sorted(by_status.items()))
                + f" at the end; e.g. on {n} instance(s): {text}"
            )
        return Figure(
            f"runs of these batches that did not finish, of {sum(self.runs().values())}",
            len(runs),
            "runs",
            0,
            "lower",
            note=note,
        )

    def runs(self) -> dict[int, int]:
        return {n: self.batch * len(rates) for n, rates in self.rates.items()}

    def describe(self) -> str:
        return (
            f"{self.batch} runs a batch created through the instances in turn, role all, "
            f"{LANE} run tokens each, three databases side by side, "
            f"{len(self.rates[COUNTS[0]])} round(s) in alternating order"
        )

    def details(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "rates": self.rates,
            "busy_percent": self.busy,
            "taken": self.taken,
            "unfinished": self.unfinished,
        }


def _rounds(rates: Sequence[float]) -> str:
    if len(rates) == 1:
        return "one round"
    return "median of " + ", ".join(f"{r:.1f}" for r in rates)


def measure(pg: PostgresServer, quick: bool, note: Callable[[str], None]) -> Throughput:
    batch, rounds = (QUICK_BATCH, QUICK_ROUNDS) if quick else (BATCH, ROUNDS)
    urls = {n: pg.new_database() for n in COUNTS}
    options = [instance(urls[n], "--run-lane-size", str(LANE)) for n in COUNTS for _ in range(n)]
    rates: dict[int, list[float]] = {n: [] for n in COUNTS}
    busy: dict[int, list[float]] = {n: [] for n in COUNTS}
    # Runs left behind, never to end, by instance count.
    stuck = dict.fromkeys(COUNTS, 0)
    note(f"throughput: starting {len(options)} instances on {len(urls)} databases")
    with running_servers(options) as servers:
        groups: dict[int, list[Server]] = {}
        for n in COUNTS:
            groups[n], servers = servers[:n], servers[n:]
        for index, order in enumerate(round_orders(rounds, COUNTS)):
            for n in order:
                note(f"throughput round {index + 1}/{rounds}: {batch} runs on {n} instance(s)")
                # Each database keeps the runs of the rounds before.
                ended_then = (index + 1) * batch - stuck[n]
                cpu = CpuTimes.now()
                rate, stuck_now = _timed_batch(groups[n], urls[n], batch, ended_then)
                busy[n].append(CpuTimes.now().busy_percent_since(cpu))
                rates[n].append(rate)
                stuck[n] += stuck_now
        unfinished = {n: _unfinished(urls[n]) for n in COUNTS}
    return Throughput(
        batch, rates, busy, taken={n: _taken(urls[n]) for n in COUNTS}, unfinished=unfinished
    )


def _timed_batch(
    servers: Sequence[Server], url: str, batch: int, ended_then: int
) -> tuple[float, int]:
    """Runs per second of ``batch`` runs created through ``servers`` in turn,
    from the first create to the last run's final status, once ``ended_then``
    runs of the database have ended; and how many runs were left stuck."""
    started = time.time()
    asyncio.run(_create_batch(servers, WORKLOAD, batch))
    stuck = _wait_ended(url, ended_then)
    (last,) = fetch_one(
        url,
        "SELECT max(timestamp) FROM events WHERE kind = 'status'"
        f" AND data::jsonb ->> 'status' IN ({_FINAL_SQL})",
    )
    return batch / (stamp(last) - started), stuck


async def _create_batch(servers: Sequence[Server], workload: SimWorkload, count: int) -> None:
    """Create ``count`` runs, the i-th through ``servers[i % len(servers)]``, on
    keep-alive connections that each create their share one after another."""
    body = json.dumps(workload.create_body()).encode()
    lanes = len(servers) * CREATORS_PER_INSTANCE

    async def creator(lane: int) -> None:
        server = servers[lane % len(servers)]
        conn = await RawConnection.connect(server.port)
        try:
            for _ in range(lane, count, lanes):
                status = await conn.request("POST", C, body)
                if status != 201:
                    raise RuntimeError(f"a create on port {server.port} answered {status}")
        finally:
            await conn.close()

    async with asyncio.timeout(GUARD_S), asyncio.TaskGroup() as tg:
        for lane in range(lanes):
            tg.create_task(creator(lane))


def _wait_ended(url: str, ended: int) -> int:
    """Wait until ``ended`` runs of the database have a final status; the runs
    left, if none has ended for STALL_S: they are stuck, not slow (each takes
    a fraction of a second)."""
    deadline = time.monotonic() + GUARD_S
    count, changed = -1, time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                f"SELECT count(*) FROM conversations WHERE status IN ({_FINAL_SQL})"
            ).fetchone()
            assert row is not None
            now = time.monotonic()
            if row[0] >= ended:
                return 0
            if row[0] != count:
                count, changed = row[0], now
            elif now - changed > STALL_S:
                return ended - count
            if now > deadline:
                raise RuntimeError(f"{ended - count} runs still going after {GUARD_S:g} s")
            time.sleep(POLL_S)


def _taken(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT data::jsonb -> 'lease' ->> 'owner', count(DISTINCT conversation_id)"
            " FROM events WHERE kind = 'status' AND data::jsonb ->> 'status' = 'running'"
            " GROUP BY 1"
        ).fetchall()
    return sorted((int(n) for _, n in rows), reverse=True)


def _unfinished(url: str) -> list[tuple[str, str]]:
    """Each run that did not finish: its status and lease now, and its statuses.
    Read while its instances still run, since one stuck under a live lease is
    settled only once its owner has gone."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id, status, owner, lease_expires > now() FROM conversations"
            " WHERE status <> 'finished' ORDER BY pk"
        ).fetchall()
        return [
            (
                status,
                f"conversation {cid}, {status}, "
                + (f"owner {owner[:8]} (lease live: {live})" if owner else "no owner")
                + ", statuses: "
                + describe_statuses(
                    conn.execute(
                        "SELECT timestamp, data FROM events WHERE conversation_id = %s"
                        " AND kind = 'status' ORDER BY seq",
                        (cid,),
                    ).fetchall()
                ),
            )
            for cid, status, owner, live in rows
        ]


def describe_statuses(rows: Sequence[tuple[str, str]]) -> str:
    """A run's status events (timestamp, JSON data) in one line: each status, its
    reason and its lease, and the time since the status before."""
    parts = []
    before: float | None = None
    for timestamp, data in rows:
        status = json.loads(data)
        text = status["status"]
        if "reason" in status:
            text += f" {status['reason']!r}"
        if "lease" in status:
            text += f" (owner {status['lease']['owner'][:8]}, fence {status['lease']['fence']})"
        at = stamp(timestamp)
        if before is not None:
            text = f"+{(at - before) * 1000:.0f} ms {text}"
        parts.append(text)
        before = at
    return "; ".join(parts)
