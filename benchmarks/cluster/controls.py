"""Across instances through NOTIFY: a run created on an ``api`` instance, to
``running`` on a ``worker``; and that run interrupted through the api, to the
``paused`` status on the api's stream.

An ``api`` instance and a ``worker`` instance on one database. Each trial
creates, on the api, a sim run whose step thinks for
:data:`~benchmarks.components.interrupt.THINK_MS`, so that only the interrupt
ends it:

- Handoff: from the create's request (the client's clock) to the ``running``
  status the worker stamps as it takes the run; the two processes read one
  machine's clock. The path: the api's commit notifies the queue channel, the
  worker's listener wakes its queue loop, which claims the run and writes
  ``running``.
- Interrupt: measured as :mod:`benchmarks.components.interrupt` measures it,
  with its helper: from ``POST /interrupt`` on the api to the ``paused`` status
  on an SSE stream of the api opened before it. The path: the api notifies the
  worker on the control channel, the worker's listener fires the interrupt,
  the run's step ends at once and stores ``paused``, whose notice brings it to
  the api's stream through the api's relay. As there, a pause of the same kind
  of run is measured beside it, up to a bound, since a pause waits for the step.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from benchmarks.cluster.shared import C, instance, stamp
from benchmarks.components import interrupt
from benchmarks.figures import Figure
from benchmarks.server import running_servers
from benchmarks.stats import percentile

if TYPE_CHECKING:
    from tests.pgserver import PostgresServer

TRIALS = 40
QUICK_TRIALS = 10
# A run must be running within this of its create, or the handoff is broken:
# a worker that missed the notification looks at the queue every second.
RUNNING_GUARD_S = 10.0
INTERRUPT_BOUND_S = 5.0
POLL_S = 0.005
# Into its step before the interrupt, as the interrupt component waits.
INTO_STEP_S = 0.1
STEPS = 3


def planned_s(quick: bool) -> float:
    # The wait into each step, some 30 ms of requests around it (measured on
    # 2 cores), and the bounded pause.
    trials = QUICK_TRIALS if quick else TRIALS
    return trials * (INTO_STEP_S + 0.03) + interrupt.PAUSE_BOUND_S


def create_body() -> dict[str, Any]:
    config = {"steps": STEPS, "think_ms": interrupt.THINK_MS}
    return {"agent": {"kind": "sim", "config": config}, "initial_message": "go"}


def status_stamps(events: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The first stamp of each status among a conversation's status events
    (as ``GET .../events?kind=status`` lists them), in seconds since the epoch."""
    found: dict[str, float] = {}
    for event in events:
        status = event["data"]["status"]
        found.setdefault(status, stamp(event["timestamp"]))
    return found


@dataclass
class Controlled:
    trials: int
    # Seconds: create request to the worker's running stamp; the api's queued
    # stamp to it; POST /interrupt to paused on the api's stream (NaN: not
    # within the bound).
    handoff: list[float] = field(default_factory=list)
    queued_to_running: list[float] = field(default_factory=list)
    interrupts: list[float] = field(default_factory=list)
    # A pause of the same kind of run: NaN if not paused within the bound.
    pause: float = math.nan

    def figures(self) -> list[Figure]:
        handoff = [s * 1000 for s in self.handoff]
        inner = [s * 1000 for s in self.queued_to_running]
        ms = sorted(s * 1000 for s in self.interrupts)
        # NaN, a trial not paused within the bound, sorts anywhere: it is the worst.
        worst = math.nan if any(math.isnan(v) for v in ms) else ms[-1]
        timed = [v for v in ms if not math.isnan(v)]
        pause_note = (
            f"a pause of the same run: not paused after {interrupt.PAUSE_BOUND_S:g} s "
            "(it waits for the step)"
            if math.isnan(self.pause)
            else f"a pause of the same run: {self.pause * 1000:.0f} ms"
        )
        missed = len(ms) - len(timed)
        interrupt_note = f"median {statistics.median(timed):.1f} ms" if timed else "none paused"
        if missed:
            interrupt_note += f"; {missed} of {len(ms)} not paused within {INTERRUPT_BOUND_S:g} s"
        return [
            Figure(
                "create on the api to running on a worker, p50",
                percentile(handoff, 0.5),
                "ms",
                note=f"max {max(handoff):.1f} ms, {len(handoff)} runs; for information",
            ),
            Figure(
                "create on the api to running on a worker, p99",
                percentile(handoff, 0.99),
                "ms",
                note=(
                    f"from the api's queued stamp: p50 {percentile(inner, 0.5):.1f}, p99 "
                    f"{percentile(inner, 0.99):.1f} ms; for information, no target"
                ),
            ),
            Figure(
                "interrupt on the api to paused, run held by a worker, worst",
                worst,
                "ms",
                interrupt.TARGET_MS,
                "lower",
                note=f"{interrupt_note}; {pause_note}",
            ),
        ]

    def describe(self) -> str:
        return (
            f"an api and a worker instance; {self.trials} sim runs with think_ms "
            f"{interrupt.THINK_MS} created on the api one after another, each timed from its "
            "create to the worker's running stamp, then interrupted through the api, timed to "
            "the paused status on the api's SSE stream opened before it (as the interrupt "
            "component does)"
        )

    def details(self) -> dict[str, Any]:
        return {
            "trials": self.trials,
            "handoff_ms": [s * 1000 for s in self.handoff],
            "queued_to_running_ms": [s * 1000 for s in self.queued_to_running],
            "interrupt_ms": [None if math.isnan(s) else s * 1000 for s in self.interrupts],
            "pause_s": None if math.isnan(self.pause) else self.pause,
        }


def measure(pg: PostgresServer, quick: bool, note: Callable[[str], None]) -> Controlled:
    url = pg.new_database()
    trials = QUICK_TRIALS if quick else TRIALS
    note("controls: starting an api and a worker")
    with running_servers([instance(url, "--role", "api"), instance(url, "--role", "worker")]) as (
        api,
        _,
    ):
        found = Controlled(trials)
        note(f"controls: {trials} runs created on the api and interrupted through it")
        with httpx.Client(base_url=api.base_url, timeout=10.0) as client:
            for _ in range(trials):
                cid = _handed_off(client, found)
                time.sleep(INTO_STEP_S)
                found.interrupts.append(
                    interrupt.until_paused(client, cid, "interrupt", INTERRUPT_BOUND_S)
                )
            cid = _handed_off(client, found=None)
            time.sleep(INTO_STEP_S)
            found.pause = interrupt.until_paused(client, cid, "pause", interrupt.PAUSE_BOUND_S)
            client.post(f"{C}/{cid}/interrupt").raise_for_status()
    return found


def _handed_off(client: httpx.Client, found: Controlled | None) -> str:
    """Create a run on the api and wait until a worker runs it; its handoff
    times into ``found``."""
    sent = time.time()
    cid: str = client.post(C, json=create_body()).raise_for_status().json()["id"]
    deadline = time.monotonic() + RUNNING_GUARD_S
    while client.get(f"{C}/{cid}").raise_for_status().json()["status"] != "running":
        if time.monotonic() > deadline:
            raise RuntimeError(f"no worker ran {cid} within {RUNNING_GUARD_S:g} s of its create")
        time.sleep(POLL_S)
    if found is not None:
        page = client.get(f"{C}/{cid}/events", params={"kind": "status"}).raise_for_status()
        stamps = status_stamps(page.json()["items"])
        found.handoff.append(stamps["running"] - sent)
        found.queued_to_running.append(stamps["running"] - stamps["queued"])
    return cid
