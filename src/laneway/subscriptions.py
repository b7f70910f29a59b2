"""Following a conversation's events: replay from the store, then live from the broker.

The seam between the two is where events get lost or repeated, so the rule is
simple: register with the broker first, replay, then take live events only
while they continue the sequence exactly. Anything else (a lagging buffer, a
gap from two threads publishing out of order) goes back to the store, which
has every event by the time it is published.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from laneway.broker import EventBroker
from laneway.lanes import Lane
from laneway.models import Event
from laneway.store.base import EventStore, NotFound

REPLAY_PAGE = 500


async def follow(
    store: EventStore, io: Lane, broker: EventBroker, conversation_id: str, after_seq: int
) -> AsyncIterator[Event]:
    """Events with seq > ``after_seq``, in order, without end until the
    conversation is deleted or the broker closes."""
    # Subscribed before the conversation is looked up: a delete that commits
    # after the lookup then closes this subscription too, instead of leaving a
    # stream open on a conversation that is gone.
    sub = broker.subscribe(conversation_id)
    last = after_seq
    try:
        known = store.cached_conversation(conversation_id) is not None
        if (
            not known
            and await io.run_sync_patiently(store.get_conversation, conversation_id) is None
        ):
            raise NotFound(f"no conversation {conversation_id!r}")
        while True:
            page = await io.run_sync_patiently(
                store.events_after, conversation_id, last, REPLAY_PAGE
            )
            for event in page:
                yield event
                last = event.seq
            if len(page) == REPLAY_PAGE:
                continue
            resync = False
            while not resync:
                batch = await sub.next_batch()
                if batch is None:
                    return
                # An empty batch means the subscriber lagged; it resyncs too.
                resync = not batch
                for event in batch:
                    if event.seq <= last:
                        continue
                    if event.seq != last + 1:
                        resync = True
                        break
                    yield event
                    last = event.seq
    finally:
        broker.unsubscribe(sub)
