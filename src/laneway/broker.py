"""Live fan-out of appended events to subscribers, never blocking the publisher.

Each subscriber has a bounded buffer. A publish that finds a buffer full drops
the event for that subscriber and marks it as lagging; the subscriber then
resumes from the store, which already holds everything published.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import anyio

from laneway.models import Event

DEFAULT_BUFFER = 256


class Subscriber:
    """One live listener on one conversation; used only on the event loop."""

    __slots__ = ("_buffer", "_closed", "_wakeup", "conversation_id", "lagging", "maxlen")

    def __init__(self, conversation_id: str, maxlen: int) -> None:
        self.conversation_id = conversation_id
        self.maxlen = maxlen
        self.lagging = False
        self._buffer: deque[Event] = deque()
        self._closed = False
        self._wakeup: anyio.Event | None = None

    def offer(self, event: Event) -> None:
        if self.lagging:
            return
        if len(self._buffer) >= self.maxlen:
            # Dropping here keeps the publisher non-blocking; the gap is filled
            # from the store when the subscriber catches up.
            self.lagging = True
            self._buffer.clear()
        else:
            self._buffer.append(event)
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    @property
    def closed(self) -> bool:
        return self._closed

    async def next_batch(self) -> list[Event] | None:
        """Wait for buffered events; [] means "lagging, resume from the store";
        None means the subscription was closed."""
        while not self._buffer and not self.lagging and not self._closed:
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        if self._closed:
            return None
        if self.lagging:
            self.lagging = False
            return []
        batch = list(self._buffer)
        self._buffer.clear()
        return batch


class EventBroker:
    """Subscribers by conversation; publish is synchronous and O(subscribers)."""

    def __init__(self, buffer_size: int = DEFAULT_BUFFER) -> None:
        self.buffer_size = buffer_size
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._closed = False

    def subscribe(self, conversation_id: str) -> Subscriber:
        sub = Subscriber(conversation_id, self.buffer_size)
        if self._closed:
            sub.close()
            return sub
        self._subscribers.setdefault(conversation_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._subscribers.get(sub.conversation_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.conversation_id]

    def publish(self, conversation_id: str, events: Iterable[Event]) -> None:
        subs = self._subscribers.get(conversation_id)
        if not subs:
            return
        for event in events:
            for sub in subs:
                sub.offer(event)

    def has_subscribers(self, conversation_id: str) -> bool:
        """Whether anyone follows the conversation live. Safe from any thread: one
        dictionary lookup, atomic under the GIL."""
        return conversation_id in self._subscribers

    def subscriber_count(self, conversation_id: str | None = None) -> int:
        if conversation_id is not None:
            return len(self._subscribers.get(conversation_id, ()))
        return sum(len(s) for s in self._subscribers.values())

    def close_conversation(self, conversation_id: str) -> None:
        for sub in self._subscribers.pop(conversation_id, set()):
            sub.close()

    def close_all(self) -> None:
        """End every subscription, and every later one at once (server shutdown)."""
        self._closed = True
        for conversation_id in list(self._subscribers):
            self.close_conversation(conversation_id)
