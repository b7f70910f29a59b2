"""Live fan-out of appended events, at a cost per event that does not grow with subscribers.

Each conversation followed live has a :class:`~laneway.topics.Topic`. A
publish adds the events to it as frames, encoded once, and starts a wave of
wakeups; it never blocks and copies nothing per subscriber. A subscriber that
has fallen behind what the topic keeps, or that meets a gap (two threads
publishing out of order), resumes from the store, which holds every event by
the time it is published.

A topic's next wave begins no sooner than its last ended, and twice as long
after its last began as that one took (at most
:data:`~laneway.topics.MAX_WAVE_INTERVAL_S`). A publish that comes sooner waits
for that wave, joining whatever else is published meanwhile; the first after a
quiet spell goes out at once. A wave to one subscriber takes some 50 µs, so
its events wait at most a tenth of a millisecond more; waves to a thousand
took a median 48 ms under uvicorn and 128 ms under hypercorn here (a run
stepping every 50 ms), so their events wait up to about twice that. The
broker's :meth:`EventBroker.pace` task, run by the service, starts the waves
that wait.

Deltas (see :mod:`laneway.deltas`) reach only the subscribers that asked for
them, through the same topics and waves; a wave for deltas alone wakes no
other. A run thread's deltas cross into the loop in batches: the first delta
after a crossing schedules one, and those that come before it runs join it,
unless the run published events meanwhile, which must go out after them.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Iterable, Sequence

import anyio
import anyio.lowlevel

from laneway.deltas import coalesce
from laneway.fromthread import call_soon
from laneway.models import Event
from laneway.topics import Frame, Subscriber, Topic

__all__ = ["DEFAULT_KEPT", "EventBroker", "Frame", "Subscriber"]

# Frames a topic keeps for subscribers that are a little behind: a subscriber
# more than this far behind reads from the store instead.
DEFAULT_KEPT = 256


class EventBroker:
    """Topics by conversation. Everything but the ``*_from_thread`` methods,
    :meth:`has_subscribers` and :meth:`wants_deltas` runs on the event loop."""

    def __init__(self, kept: int = DEFAULT_KEPT) -> None:
        if kept < 1:
            raise ValueError("a topic must keep at least one frame")
        self.kept = kept
        self._topics: dict[str, Topic] = {}
        self._closed = False
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._event_class: type[anyio.Event] = anyio.Event
        # Waves that wait for their time: (time, tie-breaker, topic).
        self._waiting_waves: list[tuple[float, int, Topic]] = []
        self._order = itertools.count()
        self._pacer_idle: anyio.Event | None = None
        self._pacing = False
        # Each conversation's deltas that a scheduled crossing will take, as
        # (step, text); the lock keeps a delta from joining a batch as it is taken.
        self._open_deltas: dict[str, list[tuple[int, str]]] = {}
        self._deltas_lock = threading.Lock()

    def subscribe(self, conversation_id: str, *, deltas: bool = False) -> Subscriber:
        """Follow the conversation live; with ``deltas``, its deltas too."""
        if self._token is None:
            self._token = anyio.lowlevel.current_token()
            # The running backend's own Event class: making one of those skips
            # the lookup of the backend that anyio.Event() does, once a wait.
            self._event_class = type(anyio.Event())
        if self._closed:
            return Subscriber(conversation_id, None)
        topic = self._topics.get(conversation_id)
        if topic is None:
            topic = Topic(conversation_id, self.kept, self._event_class, self._schedule)
            self._topics[conversation_id] = topic
        sub = Subscriber(conversation_id, topic, wants_deltas=deltas)
        topic.subscribers.add(sub)
        topic.delta_subscribers += deltas
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        topic = self._topics.get(sub.conversation_id)
        if topic is not None and sub in topic.subscribers:
            topic.subscribers.remove(sub)
            topic.delta_subscribers -= sub.wants_deltas
            if not topic.subscribers:
                del self._topics[sub.conversation_id]

    def publish(self, conversation_id: str, events: Iterable[Event]) -> None:
        topic = self._topics.get(conversation_id)
        if topic is None:
            return
        frames = [Frame(event) for event in events]
        if not frames:
            return
        already = topic.pending or topic.deltas_pending
        topic.add(frames)
        # A wave under way, or one already waiting for its time, takes these
        # too: the first when it ends, by calling _schedule.
        if not topic.in_wave and not already:
            self._schedule(topic)

    def publish_deltas(self, conversation_id: str, pieces: Sequence[tuple[int, str]]) -> None:
        """Publish ``(step, text)`` pieces of steps' text as deltas."""
        topic = self._topics.get(conversation_id)
        if topic is None or not topic.delta_subscribers or not pieces:
            return
        already = topic.pending or topic.deltas_pending
        topic.add_deltas(coalesce(conversation_id, pieces))
        if not topic.in_wave and not already:
            self._schedule(topic)

    def _schedule(self, topic: Topic) -> None:
        now = anyio.current_time()
        at = topic.next_wave()
        if now >= at or not self._pacing:
            topic.start_wave(now)
            return
        heapq.heappush(self._waiting_waves, (at, next(self._order), topic))
        if self._pacer_idle is not None:
            self._pacer_idle.set()
            self._pacer_idle = None

    async def pace(self) -> None:
        """Start each wave that waits at its time, for as long as this runs; while
        it does not, every publish starts its wave at once."""
        self._pacing = True
        try:
            while True:
                if not self._waiting_waves:
                    self._pacer_idle = idle = self._event_class()
                    await idle.wait()
                    continue
                at, _, topic = self._waiting_waves[0]
                await anyio.sleep_until(at)
                heapq.heappop(self._waiting_waves)
                self._start_waiting(topic)
        finally:
            self._pacing = False
            while self._waiting_waves:
                self._start_waiting(heapq.heappop(self._waiting_waves)[2])

    def _start_waiting(self, topic: Topic) -> None:
        # A topic dropped meanwhile (its last subscriber left) has no one to wake.
        if self._topics.get(topic.conversation_id) is topic:
            topic.start_wave(anyio.current_time())

    def publish_from_thread(self, conversation_id: str, events: Sequence[Event]) -> None:
        """:meth:`publish` from a worker thread, without waiting for the loop: a
        run thread that waited on a loop busy with a thousand subscribers would
        step at the loop's pace. Calls from one thread keep their order."""
        token = self._token
        if token is None:
            return  # nobody has ever subscribed, so nobody is following
        if conversation_id in self._open_deltas:
            # Deltas from now on cross after these events, as they come after them.
            with self._deltas_lock:
                self._open_deltas.pop(conversation_id, None)
        # False: the loop has ended, and a run left behind at shutdown publishes
        # to no one.
        call_soon(token, self.publish, conversation_id, events)

    def publish_delta_from_thread(self, conversation_id: str, step: int, text: str) -> None:
        """Publish a piece of a step's text to the subscribers that asked for
        deltas, from the run thread, without waiting for the loop. The pieces of
        one thread keep their order, among its :meth:`publish_from_thread`
        calls too; an empty piece is dropped."""
        token = self._token
        if token is None or not text:
            return
        with self._deltas_lock:
            batch = self._open_deltas.get(conversation_id)
            if batch is not None:
                batch.append((step, text))
                return
            self._open_deltas[conversation_id] = batch = [(step, text)]
        if not call_soon(token, self._cross_deltas, conversation_id, batch):
            # The loop has ended (see publish_from_thread): no batch may wait on it.
            with self._deltas_lock:
                self._open_deltas.pop(conversation_id, None)

    def _cross_deltas(self, conversation_id: str, batch: list[tuple[int, str]]) -> None:
        with self._deltas_lock:
            if self._open_deltas.get(conversation_id) is batch:
                del self._open_deltas[conversation_id]
        self.publish_deltas(conversation_id, batch)

    def has_subscribers(self, conversation_id: str) -> bool:
        """Whether anyone follows the conversation live. Safe from any thread: one
        dictionary lookup, atomic under the GIL."""
        return conversation_id in self._topics

    def wants_deltas(self, conversation_id: str) -> bool:
        """Whether anyone follows the conversation's deltas live. Safe from any
        thread, and as cheap as :meth:`has_subscribers`."""
        topic = self._topics.get(conversation_id)
        return topic is not None and topic.delta_subscribers > 0

    def followed(self) -> list[str]:
        """The conversations anyone follows live."""
        return list(self._topics)

    def last_seq(self, conversation_id: str) -> int | None:
        """The highest seq published to the conversation's topic that it still
        holds (0 if none yet); None if nobody follows it. Those below it may
        have gaps, which its subscribers fill from the store."""
        topic = self._topics.get(conversation_id)
        return None if topic is None else topic.last_seq

    def subscriber_count(self, conversation_id: str | None = None) -> int:
        if conversation_id is not None:
            topic = self._topics.get(conversation_id)
            return 0 if topic is None else len(topic.subscribers)
        return sum(len(t.subscribers) for t in self._topics.values())

    def close_conversation(self, conversation_id: str) -> None:
        topic = self._topics.pop(conversation_id, None)
        if topic is not None:
            for sub in topic.subscribers:
                sub.close()

    def close_all(self) -> None:
        """End every subscription, and every later one at once (server shutdown)."""
        self._closed = True
        for conversation_id in list(self._topics):
            self.close_conversation(conversation_id)
