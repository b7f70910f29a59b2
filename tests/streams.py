"""Helpers of the stream tests: laneway instances on one PostgreSQL database,
as far as their streams go (each a store, a broker, an io lane, a listener
and a relay, without a service); the server's side of a connection; and the
time from an append on one instance to its frame on another."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager

import anyio
import msgspec
import psycopg

from laneway.broker import DEFAULT_KEPT, EventBroker
from laneway.cluster.listener import Listener
from laneway.cluster.relay import StreamRelay
from laneway.lanes import Lane, Lanes
from laneway.models import Event, NewEvent
from laneway.store import PostgresEventStore
from laneway.subscriptions import Follower, following
from laneway.topics import Frame
from tests.pgserver import PostgresServer
from tests.services import GUARD_S

# Pauses of the tests' listeners between tries to connect again: short, so a
# test waits little once the database takes connections again.
TEST_BACKOFF_S = 0.05


class Instance(msgspec.Struct, frozen=True):
    """One laneway instance, as far as its streams go."""

    store: PostgresEventStore
    broker: EventBroker
    io: Lane
    listener: Listener
    relay: StreamRelay

    async def append(self, conversation_id: str, events: Sequence[NewEvent]) -> list[Event]:
        """Append and publish, as the service does."""
        stored = await self.io.run_sync(self.store.append, conversation_id, events)
        self.broker.publish(conversation_id, stored)
        return stored

    async def follow(
        self, conversation_id: str, until_seq: int, into: list[Event], after_seq: int = 0
    ) -> None:
        """Put into ``into``, as a follower here takes them, the conversation's
        events after ``after_seq`` up to ``until_seq``."""
        with anyio.fail_after(GUARD_S):
            async with following(
                self.store, self.io, self.broker, conversation_id, after_seq
            ) as follower:
                async for event in follower.events():
                    into.append(event)
                    if event.seq >= until_seq:
                        return


@asynccontextmanager
async def instance(
    url: str, name: str, *, kept: int = DEFAULT_KEPT, store: PostgresEventStore | None = None
) -> AsyncIterator[Instance]:
    """An instance named ``name`` on the database at ``url``, its relay running;
    on ``store`` if given (the caller closes it), else on a store of its own."""
    own = store is None
    if store is None:
        store = PostgresEventStore(url, instance_id=name)
    try:
        broker = EventBroker(kept)
        listener = Listener(url, max_backoff_s=TEST_BACKOFF_S)
        io = Lanes.create().io
        relay = StreamRelay(store, io, broker, store.instance_id, listener)
        async with relay, listener:
            yield Instance(store, broker, io, listener, relay)
    finally:
        if own:
            store.close()


def notify(url: str, channel: str, *payloads: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for payload in payloads:
            conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


def kill_backend(url: str, pid: int | None) -> None:
    """End a session from the server's side, as a restart or a failover would."""
    assert pid is not None, "no session to end"
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
    assert row == (True,)


@contextmanager
def connections_refused(postgres: PostgresServer, url: str) -> Iterator[None]:
    """The database at ``url`` takes no new connection in the block; those open
    stay open."""
    with psycopg.connect(url) as conn:
        dbname = conn.info.dbname
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS false")
        try:
            yield
        finally:
            admin.execute(f"ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS true")


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds: for what another thread does."""
    with anyio.fail_after(GUARD_S):
        while not condition():
            await anyio.sleep(0.005)


async def append_to_frame_latencies(
    writer: Instance, reader: Instance, conversation_id: str, count: int, interval_s: float = 0.0
) -> list[float]:
    """Seconds from the call of each of ``count`` appends of one event on
    ``writer`` (one after another, ``interval_s`` apart) to the moment a
    follower on ``reader`` takes its frame: the time a Server-Sent Events
    stream would send it, in process, without HTTP. Nothing else may append to
    the conversation meanwhile."""
    record = await reader.io.run_sync(reader.store.get_conversation, conversation_id)
    assert record is not None
    first = record.last_seq + 1
    called: dict[int, float] = {}
    taken: dict[int, float] = {}
    event = msgspec.convert({"kind": "message", "source": "user", "data": {"text": "t"}}, NewEvent)

    async def take(follower: Follower) -> None:
        async for batch in follower:
            now = time.perf_counter()
            for frame in batch:
                if isinstance(frame, Frame):
                    taken[frame.seq] = now
            if len(taken) == count:
                return

    async with (
        following(reader.store, reader.io, reader.broker, conversation_id, first - 1) as follower,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(take, follower)
        for _ in range(count):
            began = time.perf_counter()
            (stored,) = await writer.io.run_sync(writer.store.append, conversation_id, [event])
            called[stored.seq] = began
            if interval_s:
                await anyio.sleep(interval_s)
    assert sorted(taken) == list(range(first, first + count))
    return [taken[seq] - called[seq] for seq in sorted(called)]
