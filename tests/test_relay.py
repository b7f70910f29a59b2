"""The stream relay: a follower on one instance sees every event any instance
appends, in order, without a gap or a duplicate; notices that come while a
read is in flight make one more read; an instance reads nothing for its own
writes, nor for conversations nobody follows on it; after its listener
connects again it catches up; and a conversation deleted elsewhere ends its
followers here, as it does there."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
import pytest

from laneway.models import Event
from laneway.store import PostgresEventStore
from tests.pgserver import PostgresServer
from tests.services import GUARD_S
from tests.stores import all_events, create, msg
from tests.streams import (
    Instance,
    append_to_frame_latencies,
    connections_refused,
    eventually,
    instance,
    kill_backend,
)

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def two(pg_url: str, kept: int = 256) -> AsyncIterator[tuple[Instance, Instance]]:
    async with instance(pg_url, "a", kept=kept) as a, instance(pg_url, "b", kept=kept) as b:
        yield a, b


def assert_whole(got: list[Event], store: PostgresEventStore, cid: str, after: int = 0) -> None:
    """``got`` is every event of the conversation after ``after``, in order, each once."""
    stored = all_events(store, cid)[after:]
    assert [e.seq for e in got] == [e.seq for e in stored]
    assert [e.id for e in got] == [e.id for e in stored]
    assert [e.seq for e in stored] == list(range(after + 1, after + 1 + len(stored)))


@pytest.mark.parametrize("kept", [4, 256])
async def test_a_follower_sees_every_event_another_instance_appends(pg_url: str, kept: int) -> None:
    # kept=4: the appends outrun what a topic keeps, and followers read the store.
    async with two(pg_url, kept) as (a, b):
        cid = create(a.store, events=[msg("start")])
        sizes = [1 + i % 3 for i in range(150)]
        total = 1 + sum(sizes)
        got: list[Event] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.follow, cid, total, got)
            for n, size in enumerate(sizes):
                await a.append(cid, [msg(f"{n}.{j}") for j in range(size)])
        assert_whole(got, b.store, cid)
        # One that starts late replays the tail, then goes on live.
        late: list[Event] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.follow, cid, total + 1, late, total - 3)
            await eventually(lambda: len(late) == 3)
            await a.append(cid, [msg("last")])
        assert_whole(late, b.store, cid, after=total - 3)


async def test_appends_from_both_instances_reach_followers_on_both(pg_url: str) -> None:
    async with two(pg_url) as (a, b):
        cid = create(a.store, events=[msg("start")])
        writers, appends = 3, 40
        total = 1 + 2 * writers * appends
        seen: list[list[Event]] = [[] for _ in range(4)]

        async def write(inst: Instance, n: int) -> None:
            for i in range(appends):
                await inst.append(cid, [msg(f"{inst.store.instance_id}{n}.{i}")])

        async with anyio.create_task_group() as tg:
            for got, inst in zip(seen, (a, a, b, b), strict=True):
                tg.start_soon(inst.follow, cid, total, got)
            for inst in (a, b):
                for n in range(writers):
                    tg.start_soon(write, inst, n)
        for got in seen:
            assert_whole(got, a.store, cid)


async def test_notices_during_a_read_make_one_more_read(pg_url: str) -> None:
    gate, held = threading.Event(), threading.Event()
    gate.set()

    class GatedStore(PostgresEventStore):
        """Holds a read, once it has read, while the gate is shut."""

        def events_after(self, conversation_id: str, after_seq: int, limit: int) -> list[Event]:
            events = super().events_after(conversation_id, after_seq, limit)
            if not gate.is_set():
                held.set()
                gate.wait(GUARD_S)
            return events

    gated = GatedStore(pg_url, instance_id="b")
    try:
        async with instance(pg_url, "a") as a, instance(pg_url, "b", store=gated) as b:
            # Created on b: its notice is b's own, which b's relay drops.
            cid = create(b.store, events=[msg("start")])
            got: list[Event] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(b.follow, cid, 51, got)
                # Replayed: from here on, the follower reads the store only at a
                # gap, and the relay publishes none.
                await eventually(lambda: len(got) == 1)
                gate.clear()
                await a.append(cid, [msg("1")])
                await anyio.to_thread.run_sync(held.wait, GUARD_S)
                # The relay's read holds seq 2; 49 notices come meanwhile.
                for n in range(49):
                    await a.append(cid, [msg(f"{n}")])
                await eventually(lambda: b.relay.stats().notices == 50)
                gate.set()
            assert_whole(got, b.store, cid)
            assert b.relay.stats().reads == 2
    finally:
        gated.close()


async def test_an_instance_reads_nothing_for_its_own_writes_or_for_others_unfollowed(
    pg_url: str,
) -> None:
    async with two(pg_url) as (a, b):
        followed = create(b.store, events=[msg("start")])
        unfollowed = create(a.store, events=[msg("start")])
        got: list[Event] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.follow, followed, 22, got)
            for n in range(20):
                await b.append(followed, [msg(f"{n}")])
                await a.append(unfollowed, [msg(f"{n}")])
            # Notices come in commit order: this one comes after all the others.
            await a.append(followed, [msg("from a")])
        assert_whole(got, b.store, followed)
        stats = b.relay.stats()
        assert (stats.notices, stats.reads, stats.events) == (1, 1, 1)


async def test_a_relay_catches_up_once_its_listener_connects_again(
    postgres: PostgresServer, pg_url: str
) -> None:
    async with two(pg_url) as (a, b):
        # Created on b: only what a writes next is notified to b.
        cid = create(b.store, events=[msg("start")])
        gone = create(b.store, events=[msg("start")])
        got: list[Event] = []
        ended: list[Event] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.follow, cid, 21, got)
            tg.start_soon(b.follow, gone, 100, ended)
            await eventually(lambda: len(got) == len(ended) == 1)
            with connections_refused(postgres, pg_url):
                kill_backend(postgres.url("postgres"), b.listener.backend_pid)
                await eventually(lambda: b.listener.backend_pid is None)
                # Notified while nobody on b listened: lost.
                for n in range(20):
                    await a.append(cid, [msg(f"{n}")])
                await anyio.to_thread.run_sync(a.store.delete_conversation, gone)
            # Stopped as soon as the conversation is known to be gone.
        assert_whole(got, b.store, cid)
        assert [e.seq for e in ended] == [1]
        stats = b.relay.stats()
        assert (stats.catch_ups, stats.notices) == (1, 0)


async def test_a_conversation_deleted_elsewhere_ends_its_followers_here(pg_url: str) -> None:
    async with two(pg_url) as (a, b):
        cid = create(a.store, events=[msg("start")])
        got: list[Event] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.follow, cid, 100, got)
            await eventually(lambda: len(got) == 1)
            await a.append(cid, [msg("x")])
            await eventually(lambda: len(got) == 2)
            await anyio.to_thread.run_sync(a.store.delete_conversation, cid)
            # The follower returns by itself, as the conversation is gone.
        assert [e.seq for e in got] == [1, 2]
        assert b.broker.followed() == []


async def test_latency_from_an_append_to_a_frame_elsewhere_is_measured(pg_url: str) -> None:
    async with two(pg_url) as (a, b):
        cid = create(a.store, events=[msg("start")])
        latencies = await append_to_frame_latencies(a, b, cid, 30)
        assert len(latencies) == 30
        assert all(0 < s < GUARD_S for s in latencies)
