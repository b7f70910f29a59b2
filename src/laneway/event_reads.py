"""Reading a conversation's events: searches, counts, single events and
streams, each store call on the io lane. The service's half that only reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from laneway.broker import EventBroker
from laneway.errors import NotFound
from laneway.lanes import Lanes
from laneway.models import ConversationRecord, Event, EventFilter, Order
from laneway.store.base import EventStore
from laneway.subscriptions import Follower, following


class EventReads:
    """Mixed into :class:`~laneway.service.ConversationService`, which sets these."""

    store: EventStore
    lanes: Lanes
    broker: EventBroker
    _record: Callable[[str], Awaitable[ConversationRecord]]

    async def search_events(
        self,
        conversation_id: str,
        flt: EventFilter,
        *,
        order: Order = "asc",
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Event], str | None]:
        page, next_cursor = await self.lanes.io.run_sync(
            lambda: self.store.search_events(
                conversation_id, flt, order=order, limit=limit, cursor=cursor
            )
        )
        if not page:
            await self._record(conversation_id)
        return page, next_cursor

    async def count_events(self, conversation_id: str, flt: EventFilter) -> int:
        count = await self.lanes.io.run_sync(self.store.count_events, conversation_id, flt)
        if count == 0:
            await self._record(conversation_id)
        return count

    async def get_event(self, conversation_id: str, seq: int) -> Event:
        event = await self.lanes.io.run_sync(self.store.get_event, conversation_id, seq)
        if event is None:
            await self._record(conversation_id)
            raise NotFound(f"conversation {conversation_id!r} has no event {seq}")
        return event

    def follow(
        self, conversation_id: str, after_seq: int = 0, *, deltas: bool = False
    ) -> AbstractAsyncContextManager[Follower]:
        """Follow the events after ``after_seq`` in batches of encoded frames:
        first from the store, then live, with no gap and no duplicate; and the
        deltas if asked for. See :mod:`laneway.subscriptions`. The first
        iteration raises NotFound for an unknown conversation."""
        return following(
            self.store, self.lanes.io, self.broker, conversation_id, after_seq, deltas=deltas
        )

    async def subscribe(self, conversation_id: str, after_seq: int = 0) -> AsyncIterator[Event]:
        """The events of :meth:`follow`, one at a time."""
        async with self.follow(conversation_id, after_seq) as follower:
            async for event in follower.events():
                yield event
