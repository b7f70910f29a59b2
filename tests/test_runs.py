"""Runs: admission into the run lane, the run queue and a run's place in it,
pausing, putting a status back when a run is refused, and the stuck watchdog."""

from __future__ import annotations

import functools
import uuid
from typing import Any

import anyio
import pytest

from laneway.errors import Conflict, NotFound, RunNotAdmitted, StoreUnavailable
from laneway.lanes import SHARED_POOL_SIZE, LaneFull
from laneway.models import AgentSpec, Conversation, ConversationUpdate, Event, EventFilter
from laneway.service import ConversationService
from tests import agents
from tests.lanes_held import lane_held
from tests.services import (
    GUARD_S,
    all_events,
    full_run_queue,
    gate_spec,
    gated_run,
    open_service,
    queued_with_a_write_held,
    statuses,
    wait_idle_lane,
    wait_status,
)

pytestmark = pytest.mark.anyio


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
                    while handle.state.pause is None:  # the pause now waits for the run
                        await anyio.sleep(0.001)
            finally:
                release.set()  # the write is shielded: never leave it waiting
        # Both ended: the run with the write's error, the pause once the run was gone.
        assert len(failed) == 1
        assert conv.id not in service.runs.handles
        monkeypatch.setattr(service.runs, "_append", append)


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
        # Patient: the watchdog's write, refused above, retries and may hold the
        # one io token at this moment (it then finds the status written).
        search = functools.partial(service.store.search_events, order="asc", limit=500, cursor=None)
        events, _ = await service.lanes.io.run_sync_patiently(search, conv.id, EventFilter())
        ending = ["stuck", "error"] if fail else ["stuck"]
        assert statuses(events)[-len(ending) :] == ending
        assert statuses(events).count("stuck") == 1  # the watchdog's write found it done


async def test_a_run_that_stopped_with_messages_unread_and_then_failed_to_write_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A run at max_steps with a message unread starts again in its token; if
    # its last writes then fail (a full disk), it must end in error instead.
    async with open_service() as service:
        spec, gate = gate_spec()
        try:
            conv = await service.create(agent=spec, initial_message="a", max_steps=1)
            entered = agents.gate(spec.config["gate"] + ":entered")
            assert await anyio.to_thread.run_sync(entered.wait, GUARD_S)
            await service.send_message(conv.id, "read by no step of this run")
            store_append = service.store.append

            def append(cid: str, events: Any, update: ConversationUpdate | None = None) -> Any:
                if update is not None and update.status in ("finished", "error"):
                    raise StoreUnavailable("disk full")
                return store_append(cid, events, update)

            monkeypatch.setattr(service.store, "append", append)
        finally:
            gate.set()
        await wait_idle_lane(service)
        view = await service.get(conv.id)
        assert (view.status, view.last_error) == ("error", "StoreUnavailable: disk full")
        monkeypatch.undo()
