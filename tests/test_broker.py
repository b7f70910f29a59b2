"""The broker and its topics: events encoded once for every subscriber, paced
waves that carry what was published meanwhile, and the cases that send a
subscriber back to the store."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from laneway.broker import EventBroker, Subscriber
from laneway.lanes import Lanes
from laneway.models import AgentSpec, ConversationRecord, Event, NewEvent, utc_now
from laneway.store import SQLiteEventStore
from laneway.subscriptions import following
from laneway.topics import Frame

pytestmark = pytest.mark.anyio

GUARD_S = 15


def event(seq: int, cid: str = "c") -> Event:
    return Event(seq, f"e{seq}", cid, utc_now(), "message", "agent", {"text": f"m{seq}"})


async def collect(sub: Subscriber, upto: int, after: int = 0) -> list[list[Frame]]:
    """The batches ``sub`` takes until it has reached seq ``upto``."""
    batches: list[list[Frame]] = []
    last = after
    with anyio.fail_after(GUARD_S):
        while last < upto:
            frames = sub.frames_after(last)
            assert frames is not None, f"a gap after {last}"
            if frames:
                batches.append(frames)
                last = frames[-1].seq
            else:
                await sub.wait()
    return batches


@asynccontextmanager
async def paced(broker: EventBroker) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(broker.pace)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()


async def test_every_subscriber_gets_the_same_frames_encoded_once() -> None:
    broker = EventBroker()
    subs = [broker.subscribe("c") for _ in range(50)]
    received: list[list[Frame]] = []

    async def follow(sub: Subscriber) -> None:
        received.append([f for batch in await collect(sub, 3) for f in batch])

    async with anyio.create_task_group() as tg:
        for sub in subs:
            tg.start_soon(follow, sub)
        await anyio.sleep(0.01)
        broker.publish("c", [event(1), event(2)])
        broker.publish("c", [event(3)])
    assert len(received) == 50
    first = received[0]
    assert [f.seq for f in first] == [1, 2, 3]
    assert first[0].sse == b"id: 1\ndata: " + first[0].json + b"\n\n"
    for frames in received:
        # The very same objects: each event was encoded once, for all of them.
        assert all(a is b for a, b in zip(frames, first, strict=True))


async def test_a_publish_during_a_wave_joins_it() -> None:
    broker = EventBroker()
    subs = [broker.subscribe("c") for _ in range(20)]
    batches: list[list[list[Frame]]] = []

    async def follow(sub: Subscriber) -> None:
        batches.append(await collect(sub, 2))

    async with anyio.create_task_group() as tg, paced(broker):
        for sub in subs:
            tg.start_soon(follow, sub)
        await anyio.sleep(0.01)
        broker.publish("c", [event(1)])
        # The wave wakes one subscriber at a time; this lands while it goes on.
        await anyio.lowlevel.checkpoint()
        broker.publish("c", [event(2)])
    sizes = [[len(b) for b in got] for got in batches]
    assert all(sum(s) == 2 for s in sizes)
    # Those the wave reached after the second publish took both at once.
    assert sizes.count([2]) >= len(subs) // 2, sizes


async def test_the_next_wave_waits_for_the_last_to_end() -> None:
    broker = EventBroker()
    subs = [broker.subscribe("c") for _ in range(30)]
    seen: list[list[int]] = []

    async def follow(sub: Subscriber) -> None:
        seen.append([f.seq for batch in await collect(sub, 40) for f in batch])

    async with anyio.create_task_group() as tg, paced(broker):
        for sub in subs:
            tg.start_soon(follow, sub)
        await anyio.sleep(0.01)
        for seq in range(1, 41):
            broker.publish("c", [event(seq)])
            await anyio.lowlevel.checkpoint()
    assert seen == [list(range(1, 41))] * 30


async def test_a_subscriber_cancelled_in_its_turn_does_not_stop_the_wave() -> None:
    broker = EventBroker()
    doomed = broker.subscribe("c")
    others = [broker.subscribe("c") for _ in range(5)]
    got: list[int] = []

    async def follow(sub: Subscriber) -> None:
        got.append(sum(len(b) for b in await collect(sub, 2)))

    async with anyio.create_task_group() as tg:
        async with anyio.create_task_group() as inner:
            inner.start_soon(doomed.wait)
            await anyio.sleep(0.01)
            for sub in others:
                tg.start_soon(follow, sub)
            await anyio.sleep(0.01)
            # The doomed one waited first, so the wave wakes it first; it is
            # cancelled before it runs, and must hand its turn on all the same.
            broker.publish("c", [event(1)])
            inner.cancel_scope.cancel()
        broker.publish("c", [event(2)])
    assert got == [2] * 5


async def test_behind_what_is_kept_or_at_a_gap_means_the_store() -> None:
    broker = EventBroker(kept=4)
    sub = broker.subscribe("c")
    broker.publish("c", [event(seq) for seq in range(1, 12)])
    # Kept: at most twice four, the newest.
    assert sub.frames_after(0) is None
    assert [f.seq for f in sub.frames_after(9) or []] == [10, 11]
    # Out of order: 14 arrives before 12 and 13.
    broker.publish("c", [event(14)])
    assert [f.seq for f in sub.frames_after(11) or []] == []
    broker.publish("c", [event(12)])
    assert [f.seq for f in sub.frames_after(11) or []] == [12]
    assert sub.frames_after(12) is None  # 13 is missing: the store has it
    broker.publish("c", [event(13)])
    assert [f.seq for f in sub.frames_after(11) or []] == [12, 13, 14]


async def test_the_conversations_followed_and_the_last_seq_each_holds() -> None:
    broker = EventBroker(kept=4)
    assert broker.followed() == []
    assert broker.last_seq("c") is None
    sub = broker.subscribe("c")
    broker.subscribe("d")
    assert sorted(broker.followed()) == ["c", "d"]
    assert broker.last_seq("c") == 0
    broker.publish("c", [event(seq) for seq in range(1, 12)])
    broker.publish("c", [event(5)])  # older, and a duplicate: the last stays
    assert broker.last_seq("c") == 11
    broker.unsubscribe(sub)
    assert broker.followed() == ["d"]
    assert broker.last_seq("c") is None


async def test_closing_ends_waits_and_later_subscriptions() -> None:
    broker = EventBroker()
    sub = broker.subscribe("c")
    async with anyio.create_task_group() as tg:
        tg.start_soon(sub.wait)
        await anyio.sleep(0.01)
        broker.close_all()
    assert sub.closed
    assert broker.subscribe("d").closed
    assert broker.subscriber_count() == 0


async def test_a_poke_wakes_one_subscriber_with_nothing_new() -> None:
    broker = EventBroker()
    poked, other = broker.subscribe("c"), broker.subscribe("c")
    results: list[bool] = []

    async def wait_on(sub: Subscriber) -> None:
        results.append(await sub.wait())

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_on, poked)
        tg.start_soon(wait_on, other)
        await anyio.sleep(0.01)
        poked.poke()
        await anyio.sleep(0.01)
        assert results == [True]
        broker.publish("c", [event(1)])
    assert results == [True, False]


async def test_publishing_from_a_thread_never_waits_for_the_loop() -> None:
    broker = EventBroker()
    sub = broker.subscribe("c")
    published = threading.Event()

    def run_thread() -> None:
        broker.publish_from_thread("c", [event(1)])
        published.set()

    thread = threading.Thread(target=run_thread)
    thread.start()
    # The loop is blocked here: a publish that waited for it could not return.
    assert published.wait(GUARD_S)
    thread.join()
    assert [f.seq for batch in await collect(sub, 1) for f in batch] == [1]


async def test_a_follower_goes_from_the_store_to_live_and_back() -> None:
    store = SQLiteEventStore(":memory:")
    try:
        lanes = Lanes.create()
        now = utc_now()
        record = ConversationRecord("c", "", "idle", AgentSpec(), 5, now, now)
        store.create_conversation(record)
        broker = EventBroker(kept=2)
        messages = [NewEvent("message", "user", {"text": str(i)}) for i in range(3)]
        store.append("c", messages)
        seen: list[int] = []
        async with following(store, lanes.io, broker, "c", 0) as follower:
            batches = aiter(follower)
            with anyio.fail_after(GUARD_S):
                seen += [f.seq for f in await anext(batches)]  # replayed
                # Live, but more than the topic keeps at once: back to the store.
                broker.publish("c", store.append("c", messages * 3))
                while len(seen) < 12:
                    seen += [f.seq for f in await anext(batches)]
        assert seen == list(range(1, 13))
    finally:
        store.close()
