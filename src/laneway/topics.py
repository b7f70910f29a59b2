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
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from operator import attrgetter

import anyio
import msgspec

from laneway.models import Event

# Subscribers of one topic woken and not yet resumed, at most. Measured with
# 1,000 subscribers under hypercorn: status reads of another conversation had
# a p99 1.6x an idle twin's with 1, and 4.1x with 4; under uvicorn both were
# within 1.1x; the CPU per event was alike, and 16 cost a quarter more.
WAKE_BATCH = 1
# The longest a publish waits for its wave, however long waves take.
MAX_WAVE_INTERVAL_S = 0.5

_encode = msgspec.json.Encoder().encode
_seq_of = attrgetter("seq")


class Frame:
    """One event as every subscriber sends it; built once however many there are."""

    __slots__ = ("_text", "event", "json", "seq", "sse")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.seq = event.seq
        self.json = _encode(event)
        self.sse = b"id: %d\ndata: %s\n\n" % (event.seq, self.json)
        self._text: str | None = None

    @property
    def text(self) -> str:
        """The event as a WebSocket text frame's JSON."""
        if self._text is None:
            self._text = self.json.decode()
        return self._text


class Topic:
    """Used only on the event loop, by the broker and the topic's subscribers."""

    __slots__ = (
        "_due",
        "_frames",
        "_waiting",
        "_woken",
        "conversation_id",
        "event_class",
        "in_wave",
        "kept",
        "last_wave",
        "pending",
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
        self._woken = 0
        self.in_wave = False
        # Frames were published that no wave has yet been started for.
        self.pending = False
        # When the last wave began, and how long the last one took.
        self.last_wave = -MAX_WAVE_INTERVAL_S
        self.wave_s = 0.0

    def add(self, frames: list[Frame]) -> None:
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
        self.pending = False
        self.last_wave = now
        self._due.extend(self._waiting)
        self._waiting.clear()
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
        self._waiting.append(sub)

    def resumed(self) -> None:
        """A subscriber this topic woke has resumed: wake the next in turn."""
        self._woken -= 1
        self._wake_next()
        self._maybe_end(None)

    def _maybe_end(self, now: float | None) -> None:
        if self.in_wave and not self._woken and not self._due:
            self.in_wave = False
            self.wave_s = (anyio.current_time() if now is None else now) - self.last_wave
            if self.pending:
                self.schedule(self)


class Subscriber:
    """One live listener on one conversation; used only on the event loop."""

    __slots__ = ("_closed", "_paced", "_poked", "_topic", "_wakeup", "conversation_id")

    def __init__(self, conversation_id: str, topic: Topic | None) -> None:
        self.conversation_id = conversation_id
        self._topic = topic
        self._closed = topic is None
        self._poked = False
        # Woken by the topic in a wave, which it tells the topic on resuming.
        self._paced = False
        self._wakeup: anyio.Event | None = None

    def frames_after(self, seq: int) -> list[Frame] | None:
        """Kept frames continuing from ``seq`` ([] if none yet); None means read
        the store from ``seq`` first."""
        if self._topic is None:
            return []
        return self._topic.after(seq)

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
