"""Following a conversation through the service: gap-free across the seam from
replay to live, a slow follower, a full io lane, and a conversation deleted
while its stream opens."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import anyio
import pytest

from laneway.broker import EventBroker
from laneway.models import AgentSpec, Event, EventFilter
from tests.services import GUARD_S, open_service, wait_status

pytestmark = pytest.mark.anyio


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
