from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from laneway.agents import ToolResult
from laneway.broker import EventBroker
from laneway.errors import Conflict, InvalidRequest, NotFound, RunNotAdmitted, ShuttingDown
from laneway.lanes import SHARED_POOL_SIZE, LaneFull, Lanes, LanesConfig
from laneway.models import AgentSpec, Conversation, ConversationUpdate, Event, EventFilter, Status
from laneway.runner import RunHandle, status_event
from laneway.service import RESTART_REASON, ConversationService
from laneway.store import SQLiteEventStore
from tests import agents
from tests.lanes_held import lane_held

pytestmark = pytest.mark.anyio

GUARD_S = 15  # only a guard against hangs


@asynccontextmanager
async def open_service(
    db: str = ":memory:", broker: EventBroker | None = None, **kwargs: Any
) -> AsyncIterator[ConversationService]:
    lane_keys = {k: kwargs.pop(k) for k in list(kwargs) if k in LanesConfig.__struct_fields__}
    lanes = Lanes.create(LanesConfig(**lane_keys))
    store = SQLiteEventStore(db)
    try:
        service = ConversationService(
            store, lanes, allowed_agents=agents.ALLOWED, broker=broker, **kwargs
        )
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


async def test_no_run_is_admitted_once_shutdown_begins() -> None:
    async with open_service() as service:
        idle = await service.create()
        service.runs.stop_admitting()
        with pytest.raises(ShuttingDown):
            await service.run(idle.id)
        # Refused before anything is stored: the caller never learns the id of a
        # conversation created for a run that was refused.
        with pytest.raises(ShuttingDown):
            await service.create(initial_message="refused")
        assert await service.count_conversations() == 1
        assert (await service.get(idle.id)).status == "idle"
        # Without a run, creating still works.
        assert (await service.create(title="later")).status == "idle"
        # A message is kept even when its run is refused.
        with pytest.raises(ShuttingDown):
            await service.send_message(idle.id, "kept", run=True)
        [kept], _ = await service.search_events(idle.id, EventFilter(kind="message"))
        assert kept.data == {"text": "kept"}
        assert (await service.get(idle.id)).status == "idle"


async def test_queue_position_is_live_and_pause_removes_queued_run() -> None:
    async with open_service(run_size=1) as service:
        async with gated_run(service):
            b = await service.create(initial_message="b")
            c = await service.create(initial_message="c")
            assert (await service.get(b.id)).queue_position == 1
            assert (await service.get(c.id)).status == "queued"
            assert (await service.get(c.id)).queue_position == 2

            paused = await service.pause(b.id)
            assert paused.status == "paused"
            assert paused.queue_position is None
            assert (await service.get(c.id)).queue_position == 1
            assert service.lanes.run.snapshot().cancelled_waiting == 1
            assert statuses(await all_events(service, b.id)) == ["idle", "queued", "paused"]
        await wait_status(service, c.id, "finished")
        # The paused conversation runs again when asked, and reads its message.
        await service.run(b.id)
        await wait_status(service, b.id, "finished")
        texts = [e.data["text"] for e in await all_events(service, b.id) if e.kind == "message"]
        assert texts == ["b", "b"]


async def test_pause_running_run_takes_effect_at_step_boundary() -> None:
    async with open_service() as service:
        conv = await service.create(
            agent=AgentSpec("sim", {"steps": 1000, "think_ms": 2}),
            initial_message="go",
            max_steps=1000,
        )
        await wait_status(service, conv.id, "running")
        with anyio.fail_after(GUARD_S):
            while (await service.get(conv.id)).steps_done == 0:
                await anyio.sleep(0.001)
        paused = await service.pause(conv.id)
        assert paused.pause_requested is True or paused.status == "paused"
        await wait_status(service, conv.id, "paused")
        after = await service.get(conv.id)
        assert after.pause_requested is False
        assert 0 < after.steps_done < 1000
        # The status commits in the run's thread a moment before the token comes
        # back on the loop, so the token is waited for, not expected at once.
        await wait_idle_lane(service)


async def test_live_run_fields_count_only_while_the_status_is_active() -> None:
    # A run's final status commits a moment before its handle is dropped.
    async with open_service() as service:
        conv = await service.create()
        handle = RunHandle(conv.id)
        handle.pause_requested = True
        service.runs.handles[conv.id] = handle
        try:
            for status, expected in (("running", True), ("paused", False)):
                update = ConversationUpdate(status=status)
                await service._append(conv.id, [status_event(status)], update)
                assert (await service.get(conv.id)).pause_requested is expected
        finally:
            del service.runs.handles[conv.id]


async def test_double_run_is_a_conflict() -> None:
    async with open_service(run_size=1) as service:
        async with gated_run(service) as a:
            with pytest.raises(Conflict):
                await service.run(a.id)
            b = await service.create(initial_message="b")
            assert (await service.get(b.id)).status == "queued"
            with pytest.raises(Conflict):
                await service.run(b.id)
        await wait_status(service, b.id, "finished")


async def test_message_sent_during_a_run_is_picked_up_by_that_run() -> None:
    async with open_service() as service:
        spec, gate = gate_spec()
        conv = await service.create(agent=spec, initial_message="first")
        try:
            with anyio.fail_after(GUARD_S):
                await anyio.to_thread.run_sync(agents.gate(spec.config["gate"] + ":entered").wait)
            event, view = await service.send_message(conv.id, "second", run=True)
            assert event.data == {"text": "second"}
            assert view.status == "running"
        finally:
            gate.set()
        await wait_status(service, conv.id, "finished")
        events = await all_events(service, conv.id)
        # One run, which answered both messages.
        assert statuses(events).count("running") == 1
        replies = [e.data["text"] for e in events if e.kind == "message" and e.source == "agent"]
        assert replies == ["first", "second"]


async def test_message_during_the_last_allowed_step_gets_a_run_of_its_own() -> None:
    async with open_service(run_size=1, run_max_waiting=1) as service:
        spec, gate = gate_spec()
        conv = await service.create(agent=spec, initial_message="first", max_steps=1)
        try:
            with anyio.fail_after(GUARD_S):
                await anyio.to_thread.run_sync(agents.gate(spec.config["gate"] + ":entered").wait)
            await service.send_message(conv.id, "second", run=True)
            # The run queue is full when the run ends, and the message was accepted.
            other = await service.create(initial_message="other")
        finally:
            gate.set()
        await wait_idle_lane(service)
        events = await all_events(service, conv.id)
        # The first run may take no second step, so a new run answers the message.
        # It follows in the same token: a full queue cannot refuse it.
        assert statuses(events) == ["idle", "queued", "running", "finished", "running", "finished"]
        replies = [e.data["text"] for e in events if e.kind == "message" and e.source == "agent"]
        assert replies == ["first", "second"]
        assert (await service.get(other.id)).status == "finished"
        assert service.lanes.run.snapshot().rejected == 0


async def test_message_without_run_is_kept_for_the_next_run() -> None:
    async with open_service() as service:
        conv = await service.create()
        await service.send_message(conv.id, "later", run=False)
        assert (await service.get(conv.id)).status == "idle"
        await service.run(conv.id)
        await wait_status(service, conv.id, "finished")
        replies = [
            e.data["text"] for e in await all_events(service, conv.id) if e.source == "agent"
        ]
        assert replies == ["later"]


@asynccontextmanager
async def full_run_queue() -> AsyncIterator[tuple[ConversationService, Conversation]]:
    """A service whose run lane (one token, one queue slot) is full, and an idle
    conversation to try it with."""
    async with open_service(run_size=1, run_max_waiting=1) as service, gated_run(service):
        await service.create(initial_message="b")  # takes the only queue slot
        yield service, await service.create()


async def test_full_run_queue_rejects_but_keeps_the_message() -> None:
    async with full_run_queue() as (service, c):
        with pytest.raises(RunNotAdmitted) as info:
            await service.send_message(c.id, "kept", run=True)
        assert info.value.retry_after > 0
        assert info.value.event is not None
        assert info.value.event.data == {"text": "kept"}
        assert (await service.get(c.id)).status == "idle"
        assert await service.count_events(c.id, EventFilter(kind="message")) == 1
        with pytest.raises(RunNotAdmitted) as created:
            await service.create(initial_message="also kept")
        assert created.value.conversation is not None
        assert created.value.conversation.status == "idle"
        assert service.lanes.run.snapshot().rejected == 2


async def test_queue_filled_while_queued_was_written_puts_the_status_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with full_run_queue() as (service, c):
        # As if the queue had filled between the check and the enqueue.
        monkeypatch.setattr(service.lanes.run, "check_admission", lambda: None)
        with pytest.raises(LaneFull):
            await service.run(c.id)
        view = await service.get(c.id)
        assert (view.status, view.queue_position) == ("idle", None)
        statuses = [e.data for e in await all_events(service, c.id) if e.kind == "status"]
        assert statuses[-2:] == [
            {"status": "queued"},
            {"status": "idle", "reason": "run queue full"},
        ]
        assert c.id not in service.runs.handles

        # A new conversation is created already queued, so it is put back too.
        with pytest.raises(RunNotAdmitted) as created:
            await service.create(initial_message="kept")
        new = created.value.conversation
        assert new is not None
        assert (new.status, new.queue_position) == ("idle", None)
        events = await all_events(service, new.id)
        assert [(e.kind, e.data) for e in events] == [
            ("status", {"status": "idle", "reason": "created"}),
            ("message", {"text": "kept"}),
            ("status", {"status": "queued"}),
            ("status", {"status": "idle", "reason": "run queue full"}),
        ]
        assert new.id not in service.runs.handles

        # A message that starts a run is stored with its "queued": it stays.
        with pytest.raises(RunNotAdmitted) as sent:
            await service.send_message(c.id, "kept too", run=True)
        assert sent.value.event is not None
        assert sent.value.event.data == {"text": "kept too"}
        assert sent.value.conversation is not None
        assert sent.value.conversation.status == "idle"
        events = await all_events(service, c.id)
        assert [(e.kind, e.data) for e in events[-3:]] == [
            ("message", {"text": "kept too"}),
            ("status", {"status": "queued"}),
            ("status", {"status": "idle", "reason": "run queue full"}),
        ]
        assert events[-3] == sent.value.event
        assert c.id not in service.runs.handles


async def test_message_to_an_idle_conversation_queues_its_run_in_one_io_call() -> None:
    async with open_service() as service:
        conv = await service.create()
        before = service.lanes.io.snapshot().admitted
        event, view = await service.send_message(conv.id, "one", run=True)
        assert service.lanes.io.snapshot().admitted - before == 1
        assert view.status in ("queued", "running")
        await wait_status(service, conv.id, "finished")
        events = await all_events(service, conv.id)
        assert events[event.seq - 1] == event
        assert events[event.seq].data == {"status": "queued"}

        # Two messages at once: one run claims both, and "queued" is stored once.
        # Out of the record cache, each send waits on a read before it claims the
        # run, so both pass the check for a run in progress.
        spec, gate = gate_spec()
        held = await service.create(agent=spec)
        service.store._records.discard(held.id)
        try:
            async with anyio.create_task_group() as tg:
                for text in ("two", "three"):
                    tg.start_soon(service.send_message, held.id, text)
        finally:
            gate.set()
        await wait_status(service, held.id, "finished")
        events = await all_events(service, held.id)
        assert statuses(events) == ["idle", "queued", "running", "finished"]
        replies = [e.data["text"] for e in events if e.kind == "message" and e.source == "agent"]
        assert sorted(replies) == ["three", "two"]


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


def agent_answers(events: list[Event]) -> list[str]:
    return [e.data["text"] for e in events if e.kind == "message" and e.source == "agent"]


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

    monkeypatch.setattr(service.runs, "_append", held_append)
    return holds


async def test_message_handed_to_a_run_that_is_then_refused_is_refused_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with full_run_queue() as (service, c):
        # As if the queue had filled between the check and the enqueue.
        monkeypatch.setattr(service.lanes.run, "check_admission", lambda: None)
        [(written, release)] = hold_writes(monkeypatch, service, 1)
        refused: dict[str, RunNotAdmitted] = {}

        async def send(text: str) -> None:
            with pytest.raises(RunNotAdmitted) as info:
                await service.send_message(c.id, text, run=True)
            refused[text] = info.value

        async with anyio.create_task_group() as tg:
            try:
                tg.start_soon(send, "first")
                with anyio.fail_after(GUARD_S):
                    await written.wait()  # the first run's "queued" is being written
                # The second finds that run accepting messages, and waits to see it queued.
                tg.start_soon(send, "second")
                with anyio.fail_after(GUARD_S):
                    while service.runs.handles[c.id].newest_message_seq == 0:
                        await anyio.sleep(0.001)
            finally:
                release.set()  # the write is shielded: never leave it waiting
        # Both callers learn that no run will read their message, which is kept.
        for text in ("first", "second"):
            event = refused[text].event
            assert event is not None
            assert event.data == {"text": text}
        assert (await service.get(c.id)).status == "idle"
        assert await service.count_events(c.id, EventFilter(kind="message")) == 2


async def test_no_run_is_claimed_from_a_queued_status_that_is_being_put_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with full_run_queue() as (service, c):
        # As if the queue had filled between the check and the enqueue.
        monkeypatch.setattr(service.lanes.run, "check_admission", lambda: None)
        # The first run's "queued", then its put-back.
        [(queued_written, release_queued), (put_back_written, release_put_back)] = hold_writes(
            monkeypatch, service, 2
        )
        outcome: dict[str, BaseException | None] = {}

        async def send(text: str) -> None:
            try:
                await service.send_message(c.id, text, run=True)
            except RunNotAdmitted as exc:
                outcome[text] = exc
            else:
                outcome[text] = None

        async with anyio.create_task_group() as tg:
            try:
                tg.start_soon(send, "first")
                with anyio.fail_after(GUARD_S):
                    await queued_written.wait()
                first_run = service.runs.handles[c.id]
                release_queued.set()
                with anyio.fail_after(GUARD_S):
                    await put_back_written.wait()
                # The store still says "queued" while the refused run puts the old
                # status back; a message sent now must not claim a run from that.
                tg.start_soon(send, "second")
                with anyio.fail_after(GUARD_S):
                    while first_run.newest_message_seq == 0:
                        await anyio.sleep(0.001)
                assert service.runs.handles[c.id] is first_run
            finally:
                release_queued.set()
                release_put_back.set()  # the writes are shielded: never leave them waiting
        # Each caller learns that no run will read its message, and no "queued"
        # is left with no run behind it.
        assert outcome.keys() == {"first", "second"}
        assert all(isinstance(exc, RunNotAdmitted) for exc in outcome.values())
        assert (await service.get(c.id)).status == "idle"
        assert c.id not in service.runs.handles
        assert await service.count_events(c.id, EventFilter(kind="message")) == 2


async def test_message_to_a_run_that_has_agreed_to_end_starts_its_own_or_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_service() as service:
        store_append = service.store.append
        writing_end = threading.Event()
        release = threading.Event()

        def append_slowly_at_the_end(
            cid: str, events: Any, update: ConversationUpdate | None = None
        ) -> list[Event]:
            if update is not None and update.status == "finished":
                writing_end.set()
                release.wait(GUARD_S)
            return store_append(cid, events, update)

        check = service.lanes.run.check_admission
        queue_full = False

        def check_admission() -> None:
            if queue_full:
                raise LaneFull(service.lanes.run.name, 1, 1.0)
            check()

        monkeypatch.setattr(service.store, "append", append_slowly_at_the_end)
        monkeypatch.setattr(service.lanes.run, "check_admission", check_admission)
        for refused in (False, True):
            writing_end.clear()
            release.clear()
            outcome: list[RunNotAdmitted | None] = []

            async def send(cid: str, outcome: list[RunNotAdmitted | None]) -> None:
                try:
                    await service.send_message(cid, "late", run=True)
                    outcome.append(None)
                except RunNotAdmitted as exc:
                    outcome.append(exc)

            async with gated_run(service) as conv:
                pass
            try:
                assert await anyio.to_thread.run_sync(writing_end.wait, GUARD_S)
                # The run has agreed to end, and is writing so.
                assert not service.runs.handles[conv.id].accepting
                async with anyio.create_task_group() as tg:
                    tg.start_soon(send, conv.id, outcome)
                    await anyio.sleep(0.05)
                    assert not outcome, "answered before the run it was given to ended"
                    queue_full = refused
                    release.set()
            finally:
                release.set()
                queue_full = False
            [result] = outcome
            if refused:
                assert result is not None
                assert result.event is not None
                assert result.event.data == {"text": "late"}
                assert (await service.get(conv.id)).status == "finished"
            else:
                assert result is None
                await wait_status(service, conv.id, "finished")
                events = await all_events(service, conv.id)
                replies = [e.data["text"] for e in events if e.source == "agent"]
                assert replies[-1] == "late"
            await wait_idle_lane(service)


async def test_create_puts_the_status_back_if_refused_after_storing_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def put_back_events(events: list[Event]) -> list[dict[str, Any]]:
        return [e.data for e in events if e.kind == "status"][-2:]

    async with full_run_queue() as (service, _):
        # As if the queue had filled after create's own check.
        monkeypatch.setattr(service.runs, "check_admission", lambda: None)
        with pytest.raises(RunNotAdmitted) as refused:
            await service.create(initial_message="kept")
        full = refused.value.conversation
        assert full is not None
        assert full.status == "idle"
        assert put_back_events(await all_events(service, full.id)) == [
            {"status": "queued"},
            {"status": "idle", "reason": "run queue full"},
        ]

    async with open_service() as service:
        # As if shutdown had begun after create's own check.
        check = service.runs.check_admission

        def check_then_shut_down() -> None:
            check()
            service.runs.stop_admitting()

        monkeypatch.setattr(service.runs, "check_admission", check_then_shut_down)
        with pytest.raises(ShuttingDown):
            await service.create(initial_message="late")
        [late], _ = await service.list_conversations()
        assert late.status == "idle"
        assert put_back_events(await all_events(service, late.id)) == [
            {"status": "queued"},
            {"status": "idle", "reason": "server shutting down"},
        ]


async def test_pause_returns_when_the_queued_write_of_a_run_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_service() as service:
        conv = await service.create()
        release = anyio.Event()
        append = service.runs._append

        async def append_after_release(*args: Any, **kwargs: Any) -> list[Event]:
            await release.wait()
            raise NotFound("deleted meanwhile")

        monkeypatch.setattr(service.runs, "_append", append_after_release)
        failed: list[BaseException] = []

        async def run() -> None:
            try:
                await service.run(conv.id)
            except NotFound as exc:
                failed.append(exc)

        async with anyio.create_task_group() as tg:
            try:
                tg.start_soon(run)
                with anyio.fail_after(GUARD_S):
                    while conv.id not in service.runs.handles:
                        await anyio.sleep(0.001)
                handle = service.runs.handles[conv.id]
                tg.start_soon(service.pause, conv.id)
                with anyio.fail_after(GUARD_S):
                    while not handle.pause_requested:  # the pause now waits for the run
                        await anyio.sleep(0.001)
            finally:
                release.set()  # the write is shielded: never leave it waiting
        # Both ended: the run with the write's error, the pause once the run was gone.
        assert len(failed) == 1
        assert conv.id not in service.runs.handles
        monkeypatch.setattr(service.runs, "_append", append)


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


async def test_step_over_timeout_is_marked_stuck_and_run_ends_when_it_returns() -> None:
    async with open_service(step_timeout_s=0.1) as service:
        async with gated_run(service, "stuck", "slow") as conv:
            with pytest.raises(Conflict):
                await service.run(conv.id)
        await wait_idle_lane(service)
        events = await all_events(service, conv.id)
        assert statuses(events) == ["idle", "queued", "running", "stuck"]
        stuck = [e for e in events if e.kind == "status" and e.data["status"] == "stuck"]
        assert "step_timeout_s" in stuck[0].data["reason"]
        # The step's own output is still recorded when it finally returns.
        assert any(e.source == "agent" and e.data["text"] == "slow" for e in events)
        assert (await service.get(conv.id)).status == "stuck"


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


async def test_subscription_is_gap_free_across_the_replay_to_live_seam() -> None:
    async with open_service() as service:
        conv = await service.create(
            agent=AgentSpec("sim", {"steps": 200, "tools_per_step": 1}), initial_message="go"
        )
        seen: list[int] = []
        with anyio.fail_after(GUARD_S):
            async for event in service.subscribe(conv.id, after_seq=0):
                seen.append(event.seq)
                if event.kind == "status" and event.data["status"] == "finished":
                    break
        assert seen == list(range(1, len(seen) + 1))
        total = await service.count_events(conv.id, EventFilter())
        assert len(seen) == total
        tail: list[int] = []
        async for event in service.subscribe(conv.id, after_seq=total - 3):
            tail.append(event.seq)
            if len(tail) == 3:
                break
        assert tail == [total - 2, total - 1, total]


async def test_runs_that_take_the_whole_shared_pool_do_not_deadlock() -> None:
    # In shared mode runs and io calls draw on one pool. Runs that take every
    # token must not then wait for an io call (their own "queued" status).
    async with open_service(mode="shared", run_max_waiting=1000) as service:
        spec = AgentSpec("sim", {"steps": 2})
        convs = [await service.create(agent=spec) for _ in range(SHARED_POOL_SIZE)]
        release = anyio.Event()

        async def occupy() -> None:
            async with service.lanes.io.hold():
                await release.wait()

        with anyio.fail_after(GUARD_S):
            async with anyio.create_task_group() as tg:
                for _ in range(SHARED_POOL_SIZE):
                    tg.start_soon(occupy)
                while service.lanes.io.running < SHARED_POOL_SIZE:
                    await anyio.sleep(0.001)
                # Every token is taken; the runs line up for the pool.
                for conv in convs:
                    tg.start_soon(service.run, conv.id)
                await anyio.sleep(0.05)
                release.set()
        for conv in convs:
            await wait_status(service, conv.id, "finished")
        events = await all_events(service, convs[0].id)
        statuses = [e.data["status"] for e in events if e.kind == "status"]
        assert statuses[-3:] == ["queued", "running", "finished"]


class CountingBroker(EventBroker):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def publish(self, conversation_id: str, events: Iterable[Event]) -> None:
        events = list(events)
        self.sources += [e.source for e in events]
        super().publish(conversation_id, events)


async def test_a_run_publishes_through_the_loop_only_when_followed() -> None:
    broker = CountingBroker()
    async with open_service(broker=broker) as service:
        spec = AgentSpec("sim", {"steps": 5, "tools_per_step": 1})
        conv = await service.create(agent=spec, initial_message="go")
        await wait_status(service, conv.id, "finished")
        # No subscriber: the run thread never woke the loop to publish.
        assert set(broker.sources) <= {"user", "system"}
        assert "agent" not in broker.sources
        # A follower sees the first run replayed and the second live, without a gap.
        stream = service.subscribe(conv.id, after_seq=0)
        seen = [(await anext(stream)).seq]
        await service.send_message(conv.id, "again", run=True)
        finished = 0
        with anyio.fail_after(GUARD_S):
            async for event in stream:
                seen.append(event.seq)
                if event.kind == "status" and event.data["status"] == "finished":
                    finished += 1
                    if finished == 2:
                        break
        assert seen == list(range(1, len(seen) + 1))
        assert "agent" in broker.sources


async def test_slow_subscriber_does_not_slow_the_run_and_catches_up() -> None:
    async with open_service(broker=EventBroker(kept=4)) as service:
        conv = await service.create(
            agent=AgentSpec("sim", {"steps": 100, "tools_per_step": 2}), initial_message="go"
        )
        stream = service.subscribe(conv.id, after_seq=0)
        first = await anext(stream)  # subscribed, then stalls while the run goes on
        await wait_status(service, conv.id, "finished")
        seen = [first.seq]
        total = await service.count_events(conv.id, EventFilter())
        with anyio.fail_after(GUARD_S):
            async for event in stream:
                seen.append(event.seq)
                if event.seq == total:
                    break
        assert seen == list(range(1, total + 1))


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


async def test_delete_pauses_a_run_in_flight() -> None:
    async with open_service(run_size=1) as service:
        async with gated_run(service) as a:
            b = await service.create(initial_message="b")
            await service.delete(b.id)  # queued: leaves the queue
            assert service.lanes.run.waiting == 0
            await service.delete(a.id)  # running: stops at its step boundary
        await wait_idle_lane(service)
        assert await service.count_conversations() == 0


async def test_close_pauses_runs_and_leaves_store_consistent(tmp_path: Path) -> None:
    db = str(tmp_path / "laneway.db")
    spec, gate = gate_spec()
    try:
        async with open_service(db, run_size=1, shutdown_grace_s=0.2) as service:
            a = await service.create(agent=spec, initial_message="a")
            await wait_status(service, a.id, "running")
            b = await service.create(initial_message="b")
            long_run = await service.create(
                agent=AgentSpec("sim", {"steps": 10_000, "think_ms": 1})
            )
            del long_run
    finally:
        gate.set()
    store = SQLiteEventStore(db)
    try:
        assert store.get_conversation(a.id).status == "paused"  # type: ignore[union-attr]
        assert store.get_conversation(b.id).status == "paused"  # type: ignore[union-attr]
        assert store.count_by_status()["running"] == 0
        assert store.count_by_status()["queued"] == 0
    finally:
        store.close()


async def test_close_pauses_a_run_queue_longer_than_the_io_queue(tmp_path: Path) -> None:
    # One io call per queued run would overflow this io lane (1 running, 1
    # waiting) and leave conversations "queued" in the store.
    db = str(tmp_path / "laneway.db")
    spec, gate = gate_spec()
    try:
        async with open_service(
            db, run_size=1, io_size=1, io_max_waiting=1, shutdown_grace_s=0.2
        ) as service:
            a = await service.create(agent=spec, initial_message="a")
            await wait_status(service, a.id, "running")
            queued = [(await service.create(initial_message=f"q{i}")).id for i in range(6)]
            assert service.lanes.run.waiting == 6
    finally:
        gate.set()
    store = SQLiteEventStore(db)
    try:
        for cid in queued:
            record = store.get_conversation(cid)
            assert record is not None
            assert record.status == "paused"
            last = store.get_event(cid, record.last_seq)
            assert last is not None
            assert last.data == {"status": "paused", "reason": "paused while queued"}
        assert store.count_by_status()["queued"] == 0
    finally:
        store.close()


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


async def test_subscriptions_wait_out_a_full_io_lane() -> None:
    async with open_service(io_size=1, io_max_waiting=2) as service:
        conv = await service.create(initial_message="hi")
        await wait_status(service, conv.id, "finished")
        total = await service.count_events(conv.id, EventFilter())

        async def follow() -> None:
            seen = 0
            async for _ in service.subscribe(conv.id):
                seen += 1
                if seen == total:
                    return

        # Fifty streams replaying at once through an io lane that queues two.
        with anyio.fail_after(GUARD_S):
            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(follow)
        assert service.lanes.io.snapshot().rejected > 0


# -- what the loop owes a run, when the store or the io lane says no ------------------


async def wait_rejected(service: ConversationService, lane: str, at_least: int) -> None:
    with anyio.fail_after(GUARD_S):
        while service.lanes[lane].snapshot().rejected < at_least:
            await anyio.sleep(0.002)


async def test_pause_of_a_queued_run_waits_out_a_full_io_lane() -> None:
    async with open_service(run_size=1, io_size=1, io_max_waiting=0) as service:
        async with gated_run(service):
            b = await service.create(initial_message="b")
            paused: list[Conversation] = []
            async with lane_held(service.lanes.io) as release, anyio.create_task_group() as tg:

                async def pause() -> None:
                    paused.append(await service.pause(b.id))

                tg.start_soon(pause)
                # The pause's status write has been refused at least once ...
                await wait_rejected(service, "io", 1)
                assert not paused
                release.set()  # ... and lands once the lane has room.
            assert paused[0].status == "paused"
            assert statuses(await all_events(service, b.id))[-1] == "paused"
        await wait_idle_lane(service)
    # The service closed cleanly: nothing escaped into its task group.


async def test_pause_of_a_queued_run_deleted_meanwhile_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_service(run_size=1) as service:
        async with queued_with_a_write_held(monkeypatch, service) as (b, written, release):

            async def pause() -> None:
                with pytest.raises(NotFound):  # the conversation is gone by its end
                    await service.pause(b.id)

            async with anyio.create_task_group() as tg:
                tg.start_soon(pause)
                await written.wait()  # the queued run's pause, held before its write
                tg.start_soon(service.delete, b.id)
                with anyio.fail_after(GUARD_S):
                    while service.store.get_conversation(b.id) is not None:
                        await anyio.sleep(0.002)
                release.set()  # the write now finds no conversation
            assert b.id not in service.runs.handles
        await wait_idle_lane(service)


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


async def test_shutdown_leaves_behind_the_step_of_a_deleted_conversation(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "laneway.db")
    (spec, gate), (other_spec, other_gate) = gate_spec(), gate_spec()
    try:
        async with open_service(db, shutdown_grace_s=0.05) as service:
            gone = await service.create(agent=spec, initial_message="a")
            kept = await service.create(agent=other_spec, initial_message="b")
            for conv in (gone, kept):
                await wait_status(service, conv.id, "running")
            await anyio.to_thread.run_sync(
                agents.gate(spec.config["gate"] + ":entered").wait, GUARD_S
            )
            await service.delete(gone.id)
            assert gone.id in service.runs.handles  # its step has not returned
        # Closed cleanly: the deleted conversation needed no "paused", the other got one.
    finally:
        gate.set()
        other_gate.set()
    store = SQLiteEventStore(db)
    try:
        assert store.get_conversation(gone.id) is None
        record = store.get_conversation(kept.id)
        assert record is not None
        assert record.status == "paused"
    finally:
        store.close()


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


@pytest.mark.parametrize("fail", [False, True], ids=["returns", "raises"])
async def test_a_run_ending_after_a_stuck_step_needs_no_io_token(fail: bool) -> None:
    """In shared mode run and io tokens come from one pool: a run that waited,
    holding its run token, for the watchdog's io write could wait for ever."""
    name = uuid.uuid4().hex
    spec = AgentSpec("tests.agents:make_gate", {"gate": name, "fail": fail})
    async with open_service(step_timeout_s=0.05, io_size=1, io_max_waiting=0) as service:
        conv = await service.create(agent=spec, initial_message="a")
        await anyio.to_thread.run_sync(agents.gate(name + ":entered").wait, GUARD_S)
        async with lane_held(service.lanes.io):
            # The watchdog's write is refused while the lane is held ...
            await wait_rejected(service, "io", 1)
            agents.gate(name).set()
            # ... and the run, its step returned, writes "stuck" itself and ends.
            await wait_idle_lane(service)
        events = await all_events(service, conv.id)
        ending = ["stuck", "error"] if fail else ["stuck"]
        assert statuses(events)[-len(ending) :] == ending
        assert statuses(events).count("stuck") == 1  # the watchdog's write found it done


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


async def test_a_stream_opened_as_its_conversation_is_deleted_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_service() as service:
        conv = await service.create()
        row = service.store.get_conversation(conv.id)
        looking, deleted = threading.Event(), threading.Event()

        def lookup_before_the_delete(conversation_id: str) -> Any:
            looking.set()
            deleted.wait(GUARD_S)
            return row  # as read just before the delete committed

        monkeypatch.setattr(service.store, "cached_conversation", lambda cid: None)
        monkeypatch.setattr(service.store, "get_conversation", lookup_before_the_delete)
        got: list[Event] = []

        async def consume() -> None:
            async for event in service.subscribe(conv.id):
                got.append(event)

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.to_thread.run_sync(looking.wait, GUARD_S)
            await service.delete(conv.id)
            deleted.set()
        # The stream ended by itself (else the block above would not have).
        assert got == []


# -- a message sent with run=true while a pause is pending -----------------------------


async def test_a_message_sent_with_run_withdraws_a_pause_not_yet_taken_effect() -> None:
    async with open_service() as service:
        async with gated_run(service) as a:  # running, held inside its first step
            assert (await service.pause(a.id)).pause_requested is True
            _, view = await service.send_message(a.id, "go on", run=True)
            assert (view.status, view.pause_requested) == ("running", False)
        await wait_status(service, a.id, "finished")
        events = await all_events(service, a.id)
        assert agent_answers(events) == ["a", "go on"]  # the same run read it
        assert "paused" not in statuses(events)


async def test_a_message_sent_with_run_to_a_run_leaving_the_queue_gets_a_run_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_service(run_size=1) as service:
        held = queued_with_a_write_held(monkeypatch, service)
        async with held as (b, written, release), anyio.create_task_group() as tg:
            tg.start_soon(service.pause, b.id)
            await written.wait()  # leaving the queue; its "paused" is held
            done = service.runs.handles[b.id].done
            tg.start_soon(service.send_message, b.id, "read me")
            with anyio.fail_after(GUARD_S):
                # The pause waits for the run to go, and now the message does too.
                while done.statistics().tasks_waiting < 2:
                    await anyio.sleep(0.002)
            release.set()
        await wait_status(service, b.id, "finished")
        events = await all_events(service, b.id)
        assert agent_answers(events) == ["b", "read me"]
        assert statuses(events)[-4:] == ["paused", "queued", "running", "finished"]


async def test_a_withdrawn_pause_is_not_claimed_and_giving_up_never_reruns() -> None:
    handle = RunHandle("c")
    handle.pause_requested = True
    handle.pause_requested = False  # withdrawn by a message on the loop
    handle.message_sent(5)
    assert handle.claim_end(4, "pause") is False
    assert handle.accepting is True
    assert handle.claim_end(4, "give_up") is True
    assert (handle.accepting, handle.rerun) == (False, False)


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
