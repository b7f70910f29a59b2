"""laneway.waiting: which run a wait waits for, and what it answers."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import anyio
import pytest

from laneway import waiting
from laneway.errors import NotFound
from laneway.models import AgentSpec, ConversationUpdate, Event, EventFilter
from tests import agents
from tests.services import GUARD_S, open_service, statuses

pytestmark = pytest.mark.anyio

USER_MESSAGES = EventFilter(kind="message", source="user")


class Gate:
    """A gate agent's spec, and the two sides of its gate."""

    def __init__(self) -> None:
        name = uuid.uuid4().hex
        self.spec = AgentSpec("tests.agents:make_gate", {"gate": name})
        self.gate = agents.gate(name)
        self.entered = agents.gate(name + ":entered")

    async def wait_entered(self) -> None:
        """Until a step is inside the gate; the run is then running."""
        assert await anyio.to_thread.run_sync(self.entered.wait, GUARD_S)


def replies(events: list[Event]) -> list[str]:
    return [e.data["text"] for e in events if e.kind == "message" and e.source == "agent"]


async def test_a_wait_after_create_answers_every_event_once_the_run_has_ended() -> None:
    async with open_service() as service:
        conv = await service.create(initial_message="hi")
        waited = await waiting.after_create(service, conv).result(GUARD_S)
        assert waited.ended
        assert waited.conversation.status == "finished"
        assert [e.seq for e in waited.events] == list(range(1, len(waited.events) + 1))
        assert statuses(waited.events) == ["idle", "queued", "running", "finished"]
        assert replies(waited.events) == ["hi"]
        assert waited.next_cursor is None


async def test_a_wait_with_no_run_answers_at_once() -> None:
    async with open_service() as service:
        gate = Gate()
        try:
            idle = await service.create(initial_message="kept", run=False)
            waited = await waiting.after_create(service, idle).result(GUARD_S)
            assert waited.ended
            assert waited.conversation.status == "idle"
            assert [e.kind for e in waited.events] == ["status", "message"]
            # Not even a run in progress is waited for by a message that asked for none.
            busy = await service.create(agent=gate.spec, initial_message="a")
            await gate.wait_entered()
            event, _ = await service.send_message(busy.id, "no run", run=False)
            waited = await waiting.after_message(service, event, run=False).result(GUARD_S)
            assert waited.ended
            assert waited.conversation.status == "running"
            assert waited.events == [event]
        finally:
            gate.gate.set()


async def test_a_message_to_a_run_in_progress_waits_for_that_run() -> None:
    async with open_service() as service:
        gate = Gate()
        conv = await service.create(agent=gate.spec, initial_message="first")
        answered: list[waiting.Waited] = []
        try:
            await gate.wait_entered()
            event, _ = await service.send_message(conv.id, "second")
            wait = waiting.after_message(service, event, run=True)
            assert wait.run is service.runs.handles[conv.id]
            async with anyio.create_task_group() as tg:

                async def wait_for_it() -> None:
                    answered.append(await wait.result(GUARD_S))

                tg.start_soon(wait_for_it)
                await anyio.wait_all_tasks_blocked()
                assert not answered, "answered while its run was held in a step"
                gate.gate.set()
        finally:
            gate.gate.set()
        [waited] = answered
        assert waited.ended
        assert waited.events[0] == event
        # The one run that was in progress read it (its step held in the gate
        # answers the first message after it), and has ended.
        assert statuses(waited.events) == ["finished"]
        assert replies(waited.events) == ["first", "second"]
        assert conv.id not in service.runs.handles


async def test_a_message_handed_to_a_run_that_is_ending_waits_for_its_own_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_service() as service:
        gate = Gate()
        store_append = service.store.append
        writing_end, release = threading.Event(), threading.Event()

        def append_slowly_at_the_end(
            cid: str, events: Any, update: ConversationUpdate | None = None
        ) -> list[Event]:
            if update is not None and update.status == "finished" and not release.is_set():
                writing_end.set()
                release.wait(GUARD_S)
            return store_append(cid, events, update)

        monkeypatch.setattr(service.store, "append", append_slowly_at_the_end)
        conv = await service.create(agent=gate.spec, initial_message="first")
        gate.gate.set()
        try:
            assert await anyio.to_thread.run_sync(writing_end.wait, GUARD_S)
            ending = service.runs.handles[conv.id]
            async with anyio.create_task_group() as tg:
                sent: list[Event] = []

                async def send() -> None:
                    event, _ = await service.send_message(conv.id, "late")
                    sent.append(event)

                tg.start_soon(send)
                # Once the message is stored, the run it finds has agreed to end.
                with anyio.fail_after(GUARD_S):
                    while await service.count_events(conv.id, USER_MESSAGES) < 2:
                        await anyio.sleep(0.005)
                release.set()
        finally:
            release.set()
        [event] = sent
        wait = waiting.after_message(service, event, run=True)
        assert wait.run is not ending
        waited = await wait.result(GUARD_S)
        assert waited.ended
        # The run that had agreed to end wrote its end after the message; the
        # answer waited for the run of the message's own that followed.
        assert statuses(waited.events) == ["finished", "queued", "running", "finished"]
        assert replies(waited.events) == ["late"]


async def test_a_run_that_starts_again_in_its_token_is_waited_for_as_one() -> None:
    async with open_service() as service:
        gate = Gate()
        conv = await service.create(agent=gate.spec, initial_message="first", max_steps=1)
        try:
            await gate.wait_entered()
            event, _ = await service.send_message(conv.id, "second")
            wait = waiting.after_message(service, event, run=True)
        finally:
            gate.gate.set()
        waited = await wait.result(GUARD_S)
        assert waited.ended
        # The run could take no second step; it stopped, and started again in
        # the same token to read the message, and only then ended.
        assert statuses(waited.events) == ["finished", "running", "finished"]
        assert replies(waited.events) == ["first", "second"]


async def test_a_wait_past_its_timeout_answers_what_exists_and_the_run_goes_on() -> None:
    async with open_service() as service:
        gate = Gate()
        try:
            conv = await service.create(agent=gate.spec, initial_message="a")
            await gate.wait_entered()
            waited = await waiting.current_run(service, conv.id).result(0.01)
            assert not waited.ended
            assert waited.conversation.status == "running"
            assert statuses(waited.events) == ["idle", "queued", "running"]
        finally:
            gate.gate.set()
        later = await waiting.current_run(service, conv.id, after_seq=4).result(GUARD_S)
        assert later.ended
        assert later.conversation.status == "finished"
        assert [e.seq for e in later.events] == [5, 6]
        assert statuses(later.events) == ["finished"]


async def test_a_wait_cancelled_leaves_the_run_as_it_was() -> None:
    async with open_service() as service:
        gate = Gate()
        try:
            conv = await service.create(agent=gate.spec, initial_message="a")
            await gate.wait_entered()
            run = service.runs.handles[conv.id]
            with anyio.move_on_after(0.01):
                await waiting.current_run(service, conv.id).result(GUARD_S)
            assert service.runs.handles[conv.id] is run
            assert run.state.pause is None
            assert (await service.get(conv.id)).status == "running"
        finally:
            gate.gate.set()
        waited = await waiting.current_run(service, conv.id).result(GUARD_S)
        assert waited.conversation.status == "finished"
        assert waited.conversation.steps_done == 1


async def test_a_conversation_deleted_while_waited_for_is_not_found() -> None:
    async with open_service() as service:
        gate = Gate()
        try:
            conv = await service.create(agent=gate.spec, initial_message="a")
            await gate.wait_entered()
            wait = waiting.current_run(service, conv.id)
            await service.delete(conv.id)
        finally:
            gate.gate.set()
        with pytest.raises(NotFound):
            await wait.result(GUARD_S)
        with pytest.raises(NotFound):
            await waiting.current_run(service, uuid.uuid4().hex).result(GUARD_S)
