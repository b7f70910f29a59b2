"""Events written by other instances, published to this instance's followers.

Each instance publishes what it writes itself to its own broker. What another
instance writes reaches this one as a notice (see :mod:`laneway.store.notices`)
once it is committed; for a conversation followed here, the relay reads from
the store the events after the highest seq the conversation's topic holds, and
publishes them like any others.

It can cause no duplicate and no gap: a topic keeps one frame per seq, and a
follower takes frames only while they continue its sequence exactly, and
reads the store otherwise (see :mod:`laneway.subscriptions`). What the relay
owes is liveness: after every commit elsewhere, a publish at or past its last
seq, so that a follower waiting on the topic wakes.

- Notices of a conversation nobody follows here are dropped in the listener's
  thread: a follower that comes later replays from the store, which already
  holds those events.
- Notices that come while a conversation's read is in flight only raise the
  seq it must reach: one more read follows, never one per notice.
- A read begins at most :attr:`EventBroker.kept` events before the seq to
  reach, as the topic keeps no more: a follower further behind reads the
  store itself.
- A conversation deleted elsewhere ends its followers here, as a delete does
  on the instance that made it.
- After the listener lost its connection, every conversation followed here is
  read up to its last seq in the store (or its followers ended, if it is gone),
  since notices may have been lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Self, TypeVar, TypeVarTuple, Unpack

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec

from laneway.broker import EventBroker
from laneway.cluster.listener import Listener
from laneway.fromthread import call_soon
from laneway.lanes import Lane
from laneway.store.base import EventStore, StoreUnavailable
from laneway.store.notices import EVENTS_CHANNEL, EventsNotice

__all__ = ["RelayStats", "StreamRelay"]

log = logging.getLogger("laneway.cluster")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# The pause before a read the store refused is tried again.
RETRY_S = 1.0


class RelayStats(msgspec.Struct, frozen=True):
    """What a relay has done since it began."""

    # Notices of other instances' writes to a conversation followed here.
    notices: int
    # Reads of the store, and the events they published.
    reads: int
    events: int
    # Times the listener connected again, each a catch-up of every followed one.
    catch_ups: int


class StreamRelay:
    """Publishes to ``broker`` the events that instances other than
    ``instance_id`` commit to conversations followed here, read from ``store``
    on the ``io`` lane. Registers with ``listener``, which must not have started
    yet; enter the relay before the listener, and leave it after."""

    def __init__(
        self,
        store: EventStore,
        io: Lane,
        broker: EventBroker,
        instance_id: str,
        listener: Listener,
    ) -> None:
        self._store = store
        self._io = io
        self._broker = broker
        self._instance_id = instance_id
        # The seq each conversation's read must reach; a conversation is here
        # exactly while its read task runs.
        self._wanted: dict[str, int] = {}
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._notices = self._reads = self._events = self._catch_ups = 0
        listener.on(EVENTS_CHANNEL, self._notified, on_reconnect=self._reconnected)

    def stats(self) -> RelayStats:
        return RelayStats(self._notices, self._reads, self._events, self._catch_ups)

    async def __aenter__(self) -> Self:
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        self._token = anyio.lowlevel.current_token()
        self._tasks = tasks
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tasks, self._tasks = self._tasks, None
        assert tasks is not None, "the relay was not entered"
        # Reads under way are of no use to anyone once the relay stops.
        tasks.cancel_scope.cancel()
        return await tasks.__aexit__(exc_type, exc, tb)

    # -- in the listener's thread ----------------------------------------------

    def _notified(self, payload: str) -> None:
        notice = EventsNotice.parse(payload)
        if (
            notice is None
            or notice.instance_id == self._instance_id  # published by its writer
            or not self._broker.has_subscribers(notice.conversation_id)
            or self._token is None
        ):
            return
        call_soon(self._token, self._take, notice)

    def _reconnected(self) -> None:
        if self._token is not None:
            call_soon(self._token, self._begin_catch_up)

    # -- on the event loop -----------------------------------------------------

    def _begin_catch_up(self) -> None:
        # None here and below: the relay has stopped, as this was on its way.
        if self._tasks is not None:
            self._tasks.start_soon(self._catch_up)

    def _take(self, notice: EventsNotice) -> None:
        self._notices += 1
        if notice.last_seq is None:
            # Deleted elsewhere: its followers here end, as they do there.
            self._broker.close_conversation(notice.conversation_id)
        else:
            self._want(notice.conversation_id, notice.last_seq)

    def _want(self, conversation_id: str, seq: int) -> None:
        wanted = self._wanted.get(conversation_id)
        if wanted is not None:
            self._wanted[conversation_id] = max(wanted, seq)
        elif self._tasks is not None:
            self._wanted[conversation_id] = seq
            self._tasks.start_soon(self._read, conversation_id)

    async def _read(self, conversation_id: str) -> None:
        """Publish the conversation's events up to the seq wanted, and any that
        is wanted meanwhile."""
        kept = self._broker.kept
        try:
            while (after := self._read_after(conversation_id)) is not None:
                events = await self._patiently(
                    self._store.events_after, conversation_id, after, kept
                )
                self._reads += 1
                if not events:
                    return  # deleted meanwhile: its notice ends the followers
                self._events += len(events)
                self._broker.publish(conversation_id, events)
        finally:
            del self._wanted[conversation_id]

    def _read_after(self, conversation_id: str) -> int | None:
        """The seq the conversation's next read begins after; None if none is due:
        nobody follows it now, or its topic holds the seq wanted already."""
        wanted = self._wanted[conversation_id]
        last = self._broker.last_seq(conversation_id)
        if last is None or last >= wanted:
            return None
        return max(last, wanted - self._broker.kept)

    async def _catch_up(self) -> None:
        """Want each followed conversation's last seq in the store: notices may
        have been lost while the listener was away. One at a time, as a
        reconnect is rare and a thousand followed ones need not crowd the io lane."""
        self._catch_ups += 1
        for conversation_id in self._broker.followed():
            record = await self._patiently(self._store.get_conversation, conversation_id)
            if record is None:
                self._broker.close_conversation(conversation_id)
            else:
                self._want(conversation_id, record.last_seq)

    async def _patiently(self, fn: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
        """``fn(*args)`` on the io lane, tried again until the store answers: the
        relay owes its followers this read, and they cannot read the store
        meanwhile either."""
        while True:
            try:
                return await self._io.run_sync_patiently(fn, *args)
            except StoreUnavailable as exc:
                log.warning("the relay cannot read the store (%s); trying again", exc)
                await anyio.sleep(RETRY_S)
