"""Event appends per second from 10 concurrent runs into a file database.

Each thread acts as one run of the sweep's workload and writes as the runner
does (see laneway.runner): per step, the step's message and tool calls as one
batch with the conversation update, then the tool results as a second batch.
A second figure appends one event per call, the least favourable shape.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.figures import ComponentResult, Figure
from benchmarks.sweep import WORKLOAD
from laneway.models import AgentSpec, ConversationRecord, ConversationUpdate, NewEvent, utc_now
from laneway.store import EventStore, SQLiteEventStore

RUNS = 10
TARGET_EVENTS_PER_S = 20_000.0
# Each figure is the median of this many fresh databases, so that one short stall
# of the shared machine does not decide it; every round is printed beside it.
ROUNDS = 3
# Each thread stops after this many appends or this long, whichever comes first.
MAX_APPENDS_PER_RUN = 200_000
_AGENT = AgentSpec("sim", dataclasses.asdict(WORKLOAD))
# Writes as one run for ``seconds`` into the store, for the conversation; returns
# the events it wrote.
Writer = Callable[[EventStore, str, float], int]


def _step_batches(step: int, tools: int) -> tuple[list[NewEvent], list[NewEvent]]:
    calls = [
        NewEvent(
            "tool_call",
            "agent",
            {"call_id": f"s{step}t{i}", "name": "sleep", "arguments": {"ms": WORKLOAD.tool_ms}},
        )
        for i in range(tools)
    ]
    message = NewEvent("message", "agent", {"text": f"step {step} of {WORKLOAD.steps}"})
    results = [
        NewEvent(
            "tool_result",
            "tool",
            {"call_id": f"s{step}t{i}", "name": "sleep", "output": {"slept_ms": WORKLOAD.tool_ms}},
        )
        for i in range(tools)
    ]
    return [message, *calls], results


def as_run(store: EventStore, cid: str, seconds: float) -> int:
    """Write steps as a run does for ``seconds``; return the events written."""
    deadline = time.perf_counter() + seconds
    written = 0
    for step in range(1, MAX_APPENDS_PER_RUN // 2 + 1):
        if time.perf_counter() >= deadline:
            break
        step_events, results = _step_batches(step, WORKLOAD.tools_per_step)
        store.append(cid, step_events, ConversationUpdate(steps_done=step, read_seq=2))
        store.append(cid, results)
        written += len(step_events) + len(results)
    return written


def one_at_a_time(store: EventStore, cid: str, seconds: float) -> int:
    deadline = time.perf_counter() + seconds
    event = NewEvent("message", "agent", {"text": "one event per append"})
    written = 0
    for _ in range(MAX_APPENDS_PER_RUN):
        if time.perf_counter() >= deadline:
            break
        store.append(cid, [event])
        written += 1
    return written


@contextmanager
def sqlite_store() -> Iterator[EventStore]:
    """A fresh file database, deleted on leaving."""
    with tempfile.TemporaryDirectory(prefix="laneway-appends-") as tmp:
        store = SQLiteEventStore(str(Path(tmp) / "appends.db"))
        try:
            yield store
        finally:
            store.close()


def measure(writer: Writer, seconds: float, store: EventStore) -> float:
    """Events per second written by RUNS threads into ``store``, a fresh database."""
    now = utc_now()
    cids = [f"run{i:02d}" for i in range(RUNS)]
    for cid in cids:
        store.create_conversation(
            ConversationRecord(cid, "", "running", _AGENT, WORKLOAD.steps, now, now)
        )
    counts = [0] * RUNS
    # All threads start writing together, when the main thread arrives too.
    barrier = threading.Barrier(RUNS + 1)

    def work(index: int) -> None:
        barrier.wait()
        counts[index] = writer(store, cids[index], seconds)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(RUNS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return sum(counts) / elapsed


def _rounds(writer: Writer, seconds: float) -> list[float]:
    rates = []
    for _ in range(ROUNDS):
        with sqlite_store() as store:
            rates.append(measure(writer, seconds, store))
    return rates


def spread(rates: list[float]) -> str:
    return "median of " + ", ".join(f"{rate:,.0f}" for rate in rates)


def run(quick: bool) -> ComponentResult:
    seconds = 1.0 if quick else 3.0
    batched = _rounds(as_run, seconds)
    single = _rounds(one_at_a_time, seconds)
    per_step = 1 + 2 * WORKLOAD.tools_per_step
    return ComponentResult(
        name="appends",
        method=(
            f"{RUNS} threads in-process, each a run writing {per_step} events a step in the "
            f"runner's two batches, into a file database, {seconds:g} s each, {ROUNDS} rounds"
        ),
        figures=[
            Figure(
                "event appends/s, 10 concurrent runs",
                statistics.median(batched),
                "events/s",
                TARGET_EVENTS_PER_S,
                "higher",
                note=spread(batched),
            ),
            Figure(
                "event appends/s, one event per append",
                statistics.median(single),
                "events/s",
                note=f"{spread(single)}; for comparison, no target",
            ),
        ],
        details={
            "seconds": seconds,
            "runs": RUNS,
            "events_per_step": per_step,
            "rounds": {"batched": batched, "single": single},
        },
    )
