"""ConversationService: creating, reading, listing and deleting conversations,
what a read shows of a run in progress, and recovery after a restart."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from laneway.errors import InvalidRequest, NotFound
from laneway.lanes import LaneFull
from laneway.lifecycle import PAUSE_REASON, Phase, RunState
from laneway.models import AgentSpec, ConversationUpdate, Event, EventFilter, status_event
from laneway.restart import RESTART_REASON
from laneway.runhandle import RunHandle
from laneway.store import SQLiteEventStore
from tests.lanes_held import lane_held
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


async def test_echo_answers_and_finishes() -> None:
    async with open_service() as service:
        conv = await service.create(title="hi", initial_message="hello there")
        assert conv.status in ("queued", "running")
        await wait_status(service, conv.id, "finished")
        events = await all_events(service, conv.id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert statuses(events) == ["idle", "queued", "running", "finished"]
        messages = [(e.source, e.data["text"]) for e in events if e.kind == "message"]
        assert messages == [("user", "hello there"), ("agent", "hello there")]
        done = await service.get(conv.id)
        assert done.steps_done == 1
        assert done.queue_position is None
        assert done.pause_requested is False


async def test_create_without_message_stays_idle_and_validates_agent() -> None:
    async with open_service() as service:
        conv = await service.create()
        assert conv.status == "idle"
        assert conv.agent == AgentSpec("echo", {})
        with pytest.raises(InvalidRequest, match="unknown agent kind"):
            await service.create(agent=AgentSpec("nope"))
        with pytest.raises(InvalidRequest, match="not enabled"):
            await service.create(agent=AgentSpec("os:system"))
        with pytest.raises(InvalidRequest, match="sim config"):
            await service.create(agent=AgentSpec("sim", {"steps": "many"}))


async def test_list_count_and_delete() -> None:
    async with open_service() as service:
        ids = [(await service.create(title=f"c{i}")).id for i in range(5)]
        page, cursor = await service.list_conversations(limit=2)
        assert [c.id for c in page] == ids[::-1][:2]
        rest: list[str] = []
        while cursor is not None:
            more, cursor = await service.list_conversations(limit=2, cursor=cursor)
            rest += [c.id for c in more]
        assert rest == ids[::-1][2:]
        assert await service.count_conversations() == 5
        assert await service.count_conversations(status="idle") == 5
        assert await service.count_conversations(status="finished") == 0
        await service.delete(ids[0])
        with pytest.raises(NotFound):
            await service.get(ids[0])
        with pytest.raises(NotFound):
            await service.delete(ids[0])
        with pytest.raises(NotFound):
            await service.search_events(ids[0], EventFilter())
        assert await service.count_conversations() == 4
        assert (await service.count_by_status())["idle"] == 4


async def test_unknown_conversation_is_not_found() -> None:
    async with open_service() as service:
        for call in (
            service.get("nope"),
            service.run("nope"),
            service.pause("nope"),
            service.send_message("nope", "x"),
            service.get_event("nope", 1),
            service.count_events("nope", EventFilter()),
        ):
            with pytest.raises(NotFound):
                await call
        conv = await service.create()
        with pytest.raises(NotFound):
            await service.get_event(conv.id, 99)


async def test_delete_pauses_a_run_in_flight() -> None:
    async with open_service(run_size=1) as service:
        async with gated_run(service) as a:
            b = await service.create(initial_message="b")
            await service.delete(b.id)  # queued: leaves the queue
            assert service.lanes.run.waiting == 0
            await service.delete(a.id)  # running: stops at its step boundary
        await wait_idle_lane(service)
        assert await service.count_conversations() == 0


async def test_a_refused_delete_leaves_the_run_as_it_was() -> None:
    async with open_service(run_size=1, io_size=1, io_max_waiting=0) as service:
        async with gated_run(service):
            b = await service.create(initial_message="b")
            async with lane_held(service.lanes.io):
                with pytest.raises(LaneFull):
                    await service.delete(b.id)
            view = await service.get(b.id)
            assert (view.status, view.queue_position) == ("queued", 1)
        await wait_status(service, b.id, "finished")


async def test_live_run_fields_count_only_while_the_status_is_active() -> None:
    # A run's final status commits a moment before its handle is dropped.
    async with open_service() as service:
        conv = await service.create()
        handle = RunHandle(conv.id, queue_order=0)
        handle.state = RunState(Phase.RUNNING, enqueued=True, pause=PAUSE_REASON)
        service.runs.handles[conv.id] = handle
        try:
            for status, expected in (("running", True), ("paused", False)):
                update = ConversationUpdate(status=status)
                await service._append(conv.id, [status_event(status)], update)
                assert (await service.get(conv.id)).pause_requested is expected
        finally:
            del service.runs.handles[conv.id]


async def test_a_run_that_has_its_token_reads_as_running_before_its_thread_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_service() as service:
        conv = await service.create()
        store_append = service.store.append
        reached, release = threading.Event(), threading.Event()

        def held_running(cid: str, events: Any, update: Any = None) -> list[Event]:
            if update is not None and update.status == "running":
                reached.set()
                release.wait(GUARD_S)  # the run's thread, before it stores "running"
            return store_append(cid, events, update)

        monkeypatch.setattr(service.store, "append", held_running)
        try:
            await service.run(conv.id)
            await anyio.to_thread.run_sync(reached.wait, GUARD_S)
            view = await service.get(conv.id)
            assert (view.status, view.queue_position) == ("running", None)
        finally:
            release.set()
        await wait_status(service, conv.id, "finished")


async def test_restart_recovery_with_a_file_database(tmp_path: Path) -> None:
    db = str(tmp_path / "laneway.db")
    async with open_service(db) as service:
        conv = await service.create(initial_message="before")
        await wait_status(service, conv.id, "finished")
        before = await all_events(service, conv.id)
    # A crash leaves the conversation marked running in the store.
    store = SQLiteEventStore(db)
    store.append(conv.id, [status_event("running")], ConversationUpdate(status="running"))
    store.close()
    async with open_service(db) as service:
        view = await service.get(conv.id)
        assert view.status == "paused"
        events = await all_events(service, conv.id)
        assert events[: len(before)] == before
        assert events[-1].data == {"status": "paused", "reason": RESTART_REASON}
        await service.send_message(conv.id, "after", run=True)
        await wait_status(service, conv.id, "finished")
        replies = [
            e.data["text"] for e in await all_events(service, conv.id) if e.source == "agent"
        ]
        assert replies == ["before", "after"]
