"""Messages: one sent with run=true is read by the run in progress, or starts a
run of its own, or is kept and the caller told that no run will read it."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from laneway.errors import RunNotAdmitted
from laneway.lanes import LaneFull
from laneway.lifecycle import Phase
from laneway.models import ConversationUpdate, Event, EventFilter
from tests import agents
from tests.services import (
    GUARD_S,
    all_events,
    full_run_queue,
    gate_spec,
    gated_run,
    hold_writes,
    open_service,
    queued_with_a_write_held,
    statuses,
    wait_idle_lane,
    wait_status,
)

pytestmark = pytest.mark.anyio


def agent_answers(events: list[Event]) -> list[str]:
    return [e.data["text"] for e in events if e.kind == "message" and e.source == "agent"]


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
                    while service.runs.handles[c.id].state.newest_message_seq == 0:
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
                    while await service.count_events(c.id, EventFilter(kind="message")) < 2:
                        await anyio.sleep(0.001)
                await anyio.sleep(0.05)
                # Refused by the run that is putting its status back, it waits for it.
                assert service.runs.handles[c.id] is first_run
                assert first_run.phase is Phase.REFUSED
                assert "second" not in outcome
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
                assert service.runs.handles[conv.id].phase is Phase.ENDING
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
