"""The run loop in its run-lane thread: steps, tool calls fanned out on the
tool lane (and those of a stuck step), an agent that fails or cannot be built,
and when a run may end."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import anyio
import pytest

from laneway.agents import ToolResult
from laneway.models import AgentSpec
from tests import agents
from tests.services import (
    GUARD_S,
    all_events,
    gated_run,
    open_service,
    statuses,
    wait_idle_lane,
    wait_status,
)

pytestmark = pytest.mark.anyio


async def test_parallel_tool_calls_complete_with_lane_sizes_of_one() -> None:
    async with open_service(run_size=1, tool_size=1) as service:
        conv = await service.create(
            agent=AgentSpec("sim", {"steps": 3, "tools_per_step": 4, "tool_ms": 1}),
            initial_message="go",
        )
        await wait_status(service, conv.id, "finished")
        events = await all_events(service, conv.id)
        results = [e.data for e in events if e.kind == "tool_result"]
        assert len(results) == 12
        assert [r["call_id"] for r in results[:4]] == ["s1t0", "s1t1", "s1t2", "s1t3"]
        assert all(r["output"] == {"slept_ms": 1} for r in results)
        assert service.lanes.tool.snapshot().completed == 12


async def test_tool_calls_run_in_parallel_and_results_keep_call_order() -> None:
    key = uuid.uuid4().hex
    async with open_service(tool_size=4) as service:
        spec = AgentSpec("tests.agents:make_parallel", {"n": 4, "key": key, "meet": 4})
        conv = await service.create(agent=spec, initial_message="go")
        await wait_status(service, conv.id, "finished", "error")
        events = await all_events(service, conv.id)
        assert statuses(events)[-1] == "finished"
        assert agents.PEAKS[key] == 4
        outputs = [e.data["output"] for e in events if e.kind == "tool_result"]
        assert outputs == [0, 10, 20, 30]


async def test_agent_exception_ends_in_error_with_token_back() -> None:
    async with open_service(run_size=1) as service:
        conv = await service.create(
            agent=AgentSpec("sim", {"steps": 5, "fail_at_step": 2}), initial_message="go"
        )
        await wait_status(service, conv.id, "error")
        await wait_idle_lane(service)
        view = await service.get(conv.id)
        assert view.last_error == "RuntimeError: sim failed at step 2 as configured"
        errors = [e.data for e in await all_events(service, conv.id) if e.kind == "error"]
        assert errors == [{"type": "RuntimeError", "message": "sim failed at step 2 as configured"}]
        snap = service.lanes.run.snapshot()
        assert snap.running == 0
        assert snap.admitted == snap.completed + snap.failed
        # The token is back: another run gets it.
        other = await service.create(initial_message="next")
        await wait_status(service, other.id, "finished")


async def test_tool_results_reach_the_next_run_when_a_run_ends_after_tool_calls() -> None:
    key = uuid.uuid4().hex
    spec = AgentSpec("tests.agents:make_tool_then_record", {"key": key})
    async with open_service() as service:
        conv = await service.create(agent=spec, initial_message="go", max_steps=1)
        await wait_status(service, conv.id, "finished")
        await wait_idle_lane(service)
        await service.run(conv.id)
        await wait_status(service, conv.id, "finished")
        first, second = agents.TURNS[key]
        assert first.tool_results == []
        assert second.tool_results == [ToolResult("c1", "times10", output=40)]


async def test_an_agent_that_cannot_be_built_errors_once_with_messages_waiting() -> None:
    broken = AgentSpec("tests.agents:make_breakable", {"gate": uuid.uuid4().hex})
    async with open_service(run_size=1) as service:
        b = await service.create(agent=broken)
        try:
            # As after a restart with the plugin gone: built anew, and failing.
            agents.BROKEN.add(broken.config["gate"])
            service.runs.agents.pop(b.id)
            async with gated_run(service):
                await service.send_message(b.id, "first")  # queued behind the gate
                await service.send_message(b.id, "second")  # handed to that run
        finally:
            agents.gate(broken.config["gate"]).set()
        await wait_status(service, b.id, "error")
        await wait_idle_lane(service)
        events = await all_events(service, b.id)
        # One error, not a run started again and again for the unread messages.
        assert [e.data["type"] for e in events if e.kind == "error"] == ["AgentConfigError"]
        assert statuses(events)[-1] == "error"
        last_error = (await service.get(b.id)).last_error
        assert last_error is not None
        assert "can no longer be built" in last_error


async def test_tool_calls_of_a_stuck_step_are_reported_not_run_to_the_next_step() -> None:
    key = uuid.uuid4().hex
    spec = AgentSpec("tests.agents:make_tool_then_record", {"key": key, "gate": key})
    async with open_service(step_timeout_s=0.05) as service:
        conv = await service.create(agent=spec, initial_message="go")
        try:
            await wait_status(service, conv.id, "stuck")
        finally:
            agents.gate(key).set()
        await wait_idle_lane(service)
        await service.run(conv.id)
        await wait_status(service, conv.id, "finished")
        [result] = agents.TURNS[key][1].tool_results
        assert (result.id, result.output) == ("c1", None)
        assert result.error == "not run: its step was stuck"


async def test_an_interrupt_just_before_a_step_begins_keeps_it_from_beginning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_service() as service:
        # A step far longer than the guard: only the interrupt can end the run.
        spec = AgentSpec("sim", {"steps": 2, "think_ms": 600_000})
        conv = await service.create(agent=spec)
        search = service.store.search_events
        reading = threading.Event()
        go_on = threading.Event()

        def held_search(*args: Any, **kwargs: Any) -> Any:
            # The run's read of unread messages, between its pause check and
            # its step: held there while the interrupt lands.
            if threading.current_thread() is not threading.main_thread() and not reading.is_set():
                reading.set()
                go_on.wait(GUARD_S)
            return search(*args, **kwargs)

        monkeypatch.setattr(service.store, "search_events", held_search)
        await service.send_message(conv.id, "go")
        await anyio.to_thread.run_sync(reading.wait, GUARD_S)
        await service.interrupt(conv.id)
        go_on.set()
        await wait_status(service, conv.id, "paused")
        events = await all_events(service, conv.id)
    assert events[-1].data == {"status": "paused", "reason": "interrupted"}
    assert not [e for e in events if e.kind == "message" and e.source == "agent"]
