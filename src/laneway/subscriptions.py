"""Following a conversation's events: replay from the store, then live from the broker.

The seam between the two is where events get lost or repeated, so the rule is
simple: register with the broker first, replay, then take live frames only
while they continue the sequence exactly. Anything else (a subscriber left
behind, a gap from two threads publishing out of order) goes back to the
store, which has every event by the time it is published.

A follower that asked for deltas also gets those published while it follows
live, among the frames in publish order. Taking events from the store drops
the deltas published until then: one of those events may be the message that
ends their step, which they must not follow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from laneway.broker import EventBroker
from laneway.deltas import Delta
from laneway.lanes import Lane
from laneway.models import Event
from laneway.store.base import EventStore, NotFound
from laneway.topics import Frame, Subscriber

REPLAY_PAGE = 500


class Follower:
    """Batches of frames with seq above a starting point, in order, and deltas
    if asked for, without end until the conversation is deleted or the broker
    closes. Iterate it once."""

    def __init__(
        self, store: EventStore, io: Lane, sub: Subscriber, conversation_id: str, after_seq: int
    ) -> None:
        self._store = store
        self._io = io
        self._sub = sub
        self._cid = conversation_id
        self._after_seq = after_seq

    def poke(self) -> None:
        """Make the iteration yield an empty batch soon, if it has nothing else:
        the moment for a stream's keepalive."""
        self._sub.poke()

    def __aiter__(self) -> AsyncIterator[Sequence[Frame | Delta]]:
        return self._batches()

    async def events(self) -> AsyncIterator[Event]:
        """The events one at a time (the deltas, if asked for, left out)."""
        async for batch in self:
            for item in batch:
                if isinstance(item, Frame):
                    yield item.event

    async def _batches(self) -> AsyncIterator[Sequence[Frame | Delta]]:
        store, io, sub, cid = self._store, self._io, self._sub, self._cid
        if (
            store.cached_conversation(cid) is None
            and await io.run_sync_patiently(store.get_conversation, cid) is None
        ):
            raise NotFound(f"no conversation {cid!r}")
        last = self._after_seq
        while True:
            page = await io.run_sync_patiently(store.events_after, cid, last, REPLAY_PAGE)
            if page:
                sub.skip_deltas()
                yield [Frame(event) for event in page]
                last = page[-1].seq
            if len(page) == REPLAY_PAGE:
                continue
            while (frames := sub.frames_after(last)) is not None:
                if batch := sub.with_deltas(frames):
                    yield batch
                    if frames:
                        last = frames[-1].seq
                elif sub.closed:
                    return
                elif await sub.wait():
                    yield []


@asynccontextmanager
async def following(
    store: EventStore,
    io: Lane,
    broker: EventBroker,
    conversation_id: str,
    after_seq: int,
    *,
    deltas: bool = False,
) -> AsyncIterator[Follower]:
    """A :class:`Follower` of the conversation's events after ``after_seq``, and
    of its deltas if ``deltas``; its first iteration raises NotFound for an
    unknown conversation."""
    # Subscribed before the conversation is looked up: a delete that commits
    # after the lookup then closes this subscription too, instead of leaving a
    # stream open on a conversation that is gone.
    sub = broker.subscribe(conversation_id, deltas=deltas)
    try:
        yield Follower(store, io, sub, conversation_id, after_seq)
    finally:
        broker.unsubscribe(sub)
