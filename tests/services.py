"""A ConversationService opened for a test, and ways to drive its runs: one
held inside its first step, a full run queue, the loop's writes for runs held,
and waits for a status or for the run lane to be idle."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from laneway.agents import AgentCatalog
from laneway.broker import EventBroker
from laneway.lanes import Lanes, LanesConfig
from laneway.models import AgentSpec, Conversation, Event, EventFilter, Status
from laneway.service import ConversationService
from laneway.store import SQLiteEventStore
from tests import agents

GUARD_S = 15  # only a guard against hangs


@asynccontextmanager
async def open_service(
    db: str = ":memory:", broker: EventBroker | None = None, **kwargs: Any
) -> AsyncIterator[ConversationService]:
    lane_keys = {k: kwargs.pop(k) for k in list(kwargs) if k in LanesConfig.__struct_fields__}
    lanes = Lanes.create(LanesConfig(**lane_keys))
    store = SQLiteEventStore(db)
    catalog = kwargs.pop("agents", None) or AgentCatalog(allowed=agents.ALLOWED)
    try:
        service = ConversationService(store, lanes, agents=catalog, broker=broker, **kwargs)
        with anyio.fail_after(GUARD_S):
            async with service:
                yield service
    finally:
        store.close()


def gate_spec() -> tuple[AgentSpec, Any]:
    name = uuid.uuid4().hex
    return AgentSpec("tests.agents:make_gate", {"gate": name}), agents.gate(name)


@asynccontextmanager
async def gated_run(
    service: ConversationService, status: Status = "running", message: str = "a"
) -> AsyncIterator[Conversation]:
    """A conversation whose run is held inside its first step until the block ends."""
    spec, gate = gate_spec()
    try:
        conv = await service.create(agent=spec, initial_message=message)
        await wait_status(service, conv.id, status)
        if status == "running":
            # "running" shows from the moment the run has its token; the step
            # begins a moment later, once its thread has stored that status.
            entered = agents.gate(spec.config["gate"] + ":entered")
            await anyio.to_thread.run_sync(entered.wait, GUARD_S)
        yield conv
    finally:
        gate.set()


async def wait_status(service: ConversationService, cid: str, *statuses: Status) -> None:
    with anyio.fail_after(GUARD_S):
        while (await service.get(cid)).status not in statuses:
            await anyio.sleep(0.005)


async def wait_idle_lane(service: ConversationService) -> None:
    with anyio.fail_after(GUARD_S):
        while service.lanes.run.running or service.runs.handles:
            await anyio.sleep(0.005)


async def all_events(service: ConversationService, cid: str) -> list[Event]:
    events, _ = await service.search_events(cid, EventFilter(), limit=500)
    return events


def statuses(events: list[Event]) -> list[str]:
    return [e.data["status"] for e in events if e.kind == "status"]


@asynccontextmanager
async def full_run_queue() -> AsyncIterator[tuple[ConversationService, Conversation]]:
    """A service whose run lane (one token, one queue slot) is full, and an idle
    conversation to try it with."""
    async with open_service(run_size=1, run_max_waiting=1) as service, gated_run(service):
        await service.create(initial_message="b")  # takes the only queue slot
        yield service, await service.create()


def hold_writes(
    monkeypatch: pytest.MonkeyPatch, service: ConversationService, count: int
) -> list[tuple[anyio.Event, anyio.Event]]:
    """Hold the next ``count`` writes that runs make on the loop: each sets the
    first event of its pair when it is reached, and waits for the second."""
    append = service.runs._append
    holds = [(anyio.Event(), anyio.Event()) for _ in range(count)]
    ahead = list(holds)

    async def held_append(*args: Any, **kwargs: Any) -> list[Event]:
        if ahead:
            reached, release = ahead.pop(0)
            reached.set()
            await release.wait()
        return await append(*args, **kwargs)

    # Runs write "queued" themselves; what they owe (a put-back, a pause) goes
    # through their OwedStatuses.
    monkeypatch.setattr(service.runs, "_append", held_append)
    monkeypatch.setattr(service.runs.owed, "_append", held_append)
    return holds


@asynccontextmanager
async def queued_with_a_write_held(
    monkeypatch: pytest.MonkeyPatch, service: ConversationService
) -> AsyncIterator[tuple[Conversation, anyio.Event, anyio.Event]]:
    """A run queued behind a held one (open the service with run_size=1), and
    the next write the loop makes for a run held: yields the queued run's
    conversation, the event set when the write is reached, and its release."""
    async with gated_run(service):
        queued = await service.create(initial_message="b")
        [(reached, release)] = hold_writes(monkeypatch, service, 1)
        yield queued, reached, release
