"""A topic: the recent events of one conversation, as frames, and its subscribers.

A topic keeps the frames most recently published to it, in seq order, each
event encoded once (JSON, Server-Sent Events and WebSocket text) for every
subscriber. A subscriber keeps only the seq it has reached and takes what comes
after it straight from the topic, all of it at once.

Subscribers are woken in waves, and a wave is paced: at most
:data:`WAKE_BATCH` of its subscribers are woken and not yet resumed at a time,
each wakes the next as it resumes, and a wave begins only once the last has
ended. A thousand subscribers woken at once would put a thousand sends between
the event loop and everything else it has to do, the run's own calls back into
the loop included, for tens of milliseconds; paced, each turn of the loop
carries a few of them. And since a subscriber takes everything published by
the time its turn comes, the busier the topic, the more events each send
carries: with many subscribers, sends (a system call each) rather than events
are what cost.

A topic also keeps its most recent deltas (see :mod:`laneway.deltas`), for the
subscribers that asked for them; a wave for deltas alone wakes only those. Each
frame and delta is marked with the count of publishes of frames so far, which
is how a subscriber puts deltas between the frames it takes in publish order.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from operator import attrgetter

import anyio
import msgspec

from laneway.deltas import Delta
from laneway.models import Event

# Subscribers of one topic woken and not yet resumed, at most. Measured with
# 1,000 subscribers under hypercorn: status reads of another conversation had
# a p99 1.6x an idle twin's with 1, and 4.1x with 4; under uvicorn both were
# within 1.1x; the CPU per event was alike, and 16 cost a quarter more.
WAKE_BATCH = 1
# The longest a publish waits for its wave, however long waves take.
MAX_WAVE_INTERVAL_S = 0.5
# Deltas a topic keeps for subscribers that are a little behind: some seconds of
# an LLM's output, when it comes a token at a time; one further behind skips
# the older ones.
DELTAS_KEPT = 256

_encode = msgspec.json.Encoder().encode
_seq_of = attrgetter("seq")


class Frame:
    """One event as every subscriber sends it; built once however many there are."""

    __slots__ = ("_text", "event", "json", "mark", "seq", "sse")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.seq = event.seq
        self.json = _encode(event)
        self.sse = b"id: %d\ndata: %s\n\n" % (event.seq, self.json)
        self._text: str | None = None
        # Set by the topic it is published to; a frame read from the store is
        # never put among deltas (see Subscriber.skip_deltas).
        self.mark = 0

    @property
    def text(self) -> str:
        """The event as a WebSocket text frame's JSON."""
        if self._text is None:
            self._text = self.json.decode()
        return self._text


class Topic:
    """Used only on the event loop, by the broker and the topic's subscribers."""

    __slots__ = (
        "_deltas",
        "_due",
        "_frames",
        "_waiting",
        "_waiting_for_deltas",
        "_woken",
        "conversation_id",
        "delta_subscribers",
        "deltas_added",
        "deltas_pending",
        "event_class",
        "in_wave",
        "kept",
        "last_wave",
        "pending",
        "publishes",
        "schedule",
        "subscribers",
        "wave_s",
    )

    def __init__(
        self,
        conversation_id: str,
        kept: int,
        event_class: type[anyio.Event],
        schedule: Callable[[Topic], None],
    ) -> None:
        self.conversation_id = conversation_id
        self.kept = kept
        self.event_class = event_class
        # Called when a wave ends with frames published during it.
        self.schedule = schedule
        # Ascending by seq, without duplicates; between kept and twice kept long,
        # so that trimming is one slice now and then rather than one per publish.
        self._frames: list[Frame] = []
        self.subscribers: set[Subscriber] = set()
        # Subscribers that began waiting since the last wave began; then those
        # that wave is to wake, in turn. Either may hold one woken otherwise
        # since (a poke, a close), which is skipped.
        self._waiting: list[Subscriber] = []
        self._due: deque[Subscriber] = deque()
        # The same for subscribers that asked for deltas: a wave for deltas
        # alone wakes only these.
        self._waiting_for_deltas: list[Subscriber] = []
        self._woken = 0
        self.in_wave = False
        # Frames, or deltas, were published that no wave has yet been started for.
        self.pending = False
        self.deltas_pending = False
        # Publishes of frames so far: the mark of what is added now.
        self.publishes = 0
        # The most recent deltas, ascending by index, between DELTAS_KEPT and
        # twice that long; the index of the next one; and how many subscribers
        # asked for them (read from run threads, see EventBroker.wants_deltas).
        self._deltas: list[Delta] = []
        self.deltas_added = 0
        self.delta_subscribers = 0
        # When the last wave began, and how long the last one took.
        self.last_wave = -MAX_WAVE_INTERVAL_S
        self.wave_s = 0.0

    def add(self, frames: list[Frame]) -> None:
        self.publishes += 1
        for frame in frames:
            frame.mark = self.publishes
        kept = self._frames
        if not kept or frames[0].seq > kept[-1].seq:
            kept.extend(frames)
        else:
            # Out of order: a request's write and a run's write raced to the loop.
            merged = {f.seq: f for f in kept}
            for frame in frames:
                merged.setdefault(frame.seq, frame)
            kept[:] = sorted(merged.values(), key=_seq_of)
        if len(kept) > 2 * self.kept:
            del kept[: -self.kept]
        self.pending = True

    @property
    def last_seq(self) -> int:
        """The highest seq kept; 0 if none is."""
        return self._frames[-1].seq if self._frames else 0

    def add_deltas(self, deltas: list[Delta]) -> None:
        for delta in deltas:
            # Frames of later publishes have a higher mark: they go after it.
            delta.mark = self.publishes
            delta.index = self.deltas_added
            self.deltas_added += 1
        kept = self._deltas
        kept.extend(deltas)
        if len(kept) > 2 * DELTAS_KEPT:
            del kept[:-DELTAS_KEPT]
        self.deltas_pending = True

    def deltas_since(self, index: int) -> list[Delta]:
        """The kept deltas from ``index`` on; those before the oldest kept are lost."""
        kept = self._deltas
        if not kept or kept[-1].index < index:
            return []
        return kept[max(0, index - kept[0].index) :]

    def after(self, seq: int) -> list[Frame] | None:
        """The frames that continue from ``seq`` without a gap; None if the next
        one is not kept (behind, or not yet published while a later one was)."""
        kept = self._frames
        if not kept or kept[-1].seq <= seq:
            return []
        start = bisect_right(kept, seq, key=_seq_of)
        if kept[start].seq != seq + 1:
            return None
        found = kept[start:]
        if found[-1].seq - seq != len(found):
            # A gap further on: take what continues; the next call meets the gap.
            end = next(i for i, f in enumerate(found) if f.seq != seq + 1 + i)
            found = found[:end]
        return found

    def next_wave(self) -> float:
        """The earliest the next wave may begin: twice as long after the last as
        that one took, so that one topic's waves take at most about half of the
        loop's time."""
        return self.last_wave + min(MAX_WAVE_INTERVAL_S, 2 * self.wave_s)

    def start_wave(self, now: float) -> None:
        if self.pending:
            self._due.extend(self._waiting)
            self._waiting.clear()
        self._due.extend(self._waiting_for_deltas)
        self._waiting_for_deltas.clear()
        self.pending = self.deltas_pending = False
        self.last_wave = now
        self.in_wave = True
        self._wake_next()
        self._maybe_end(now)

    def _wake_next(self) -> None:
        while self._woken < WAKE_BATCH and self._due:
            sub = self._due.popleft()
            if sub._wakeup is not None:
                sub._paced = True
                self._woken += 1
                sub._wake()

    def waiting(self, sub: Subscriber) -> None:
        (self._waiting_for_deltas if sub.wants_deltas else self._waiting).append(sub)

    def resumed(self) -> None:
        """A subscriber this topic woke has resumed: wake the next in turn."""
        self._woken -= 1
        self._wake_next()
        self._maybe_end(None)

    def _maybe_end(self, now: float | None) -> None:
        if self.in_wave and not self._woken and not self._due:
            self.in_wave = False
            self.wave_s = (anyio.current_time() if now is None else now) - self.last_wave
            if self.pending or self.deltas_pending:
                self.schedule(self)


class Subscriber:
    """One live listener on one conversation; used only on the event loop."""

    __slots__ = (
        "_closed",
        "_next_delta",
        "_paced",
        "_poked",
        "_topic",
        "_wakeup",
        "conversation_id",
        "wants_deltas",
    )

    def __init__(
        self, conversation_id: str, topic: Topic | None, *, wants_deltas: bool = False
    ) -> None:
        self.conversation_id = conversation_id
        self._topic = topic
        self._closed = topic is None
        self._poked = False
        # Woken by the topic in a wave, which it tells the topic on resuming.
        self._paced = False
        self._wakeup: anyio.Event | None = None
        self.wants_deltas = wants_deltas
        # The index of the next delta to take: those published from now on.
        self._next_delta = 0 if topic is None else topic.deltas_added

    def frames_after(self, seq: int) -> list[Frame] | None:
        """Kept frames continuing from ``seq`` ([] if none yet); None means read
        the store from ``seq`` first."""
        if self._topic is None:
            return []
        return self._topic.after(seq)

    def with_deltas(self, frames: list[Frame]) -> Sequence[Frame | Delta]:
        """``frames`` (the next from :meth:`frames_after`) with the deltas
        published since the last call put among them in publish order; just
        ``frames`` for a subscriber that did not ask for deltas."""
        topic = self._topic
        if topic is None or not self.wants_deltas or self._next_delta == topic.deltas_added:
            return frames
        deltas = topic.deltas_since(self._next_delta)
        self._next_delta = topic.deltas_added
        merged: list[Frame | Delta] = []
        taken = 0
        for frame in frames:
            while taken < len(deltas) and deltas[taken].mark < frame.mark:
                merged.append(deltas[taken])
                taken += 1
            merged.append(frame)
        merged += deltas[taken:]
        return merged

    def skip_deltas(self) -> None:
        """Drop the deltas published so far: called on taking events from the
        store, which may hold the message that ends their step, published after
        them and now sent before them."""
        if self._topic is not None:
            self._next_delta = self._topic.deltas_added

    async def wait(self) -> bool:
        """Wait for a wave, a poke or the end; True if it was a poke."""
        topic = self._topic
        if topic is not None and not self._poked:
            self._wakeup = wakeup = topic.event_class()
            topic.waiting(self)
            try:
                await wakeup.wait()
            finally:
                # Also when cancelled: a wave waits for every subscriber it woke.
                self._wakeup = None
                if self._paced:
                    self._paced = False
                    topic.resumed()
        poked, self._poked = self._poked, False
        return poked

    def poke(self) -> None:
        """Wake the subscriber with nothing new, so that it can send a keepalive."""
        self._poked = True
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._topic = None
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    @property
    def closed(self) -> bool:
        return self._closed
