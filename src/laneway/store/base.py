"""The storage interface: small, blocking, and safe to call from many threads.

Every method blocks. Async code calls them on the io lane; run and tool threads
call the write methods directly, since they are already off the event loop.
Every write may raise :class:`StoreUnavailable`. A PostgreSQL store for several
laneway instances implements the same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from laneway.models import (
    ConversationRecord,
    ConversationUpdate,
    Event,
    EventFilter,
    NewEvent,
    Order,
    Status,
)


class NotFound(LookupError):
    """No conversation (or event) with that id."""


class DatabaseInUse(RuntimeError):
    """Another process uses this SQLite file as a laneway store."""


class LeaseLost(Exception):
    """A run's write carried a lease that no longer holds the run: its owner was
    cut off long enough for another instance to take the run over (or to end
    it). Nothing of the write was stored, and the run must stop writing."""


class StoreUnavailable(Exception):
    """The store cannot write now: the disk is full, or refused the write. Nothing
    of the refused write was stored; the store takes writes again once the
    disk does, without a restart."""


class Recovery(msgspec.Struct, frozen=True):
    """What :meth:`EventStore.recover_interrupted` made of the runs a stopped
    process left queued or running."""

    # Were running: now paused, their open tool calls answered.
    paused: list[str]
    # Were queued, and still are, the first queued first: for the caller to
    # queue again, in this order.
    requeued: list[ConversationRecord]
    # Were queued, past the room given: now paused.
    not_requeued: list[str]


def check_queue_order(status: object, queue_order: object) -> None:
    """Raise ValueError for a status "queued" without its place in the queue
    order: that would be a run a restart cannot place (see EventStore.append)."""
    if status == "queued" and not isinstance(queue_order, int):
        raise ValueError('the status "queued" needs its place in the queue order')


class EventStore(Protocol):
    def create_conversation(
        self, record: ConversationRecord, events: Sequence[NewEvent] = ()
    ) -> list[Event]:
        """Insert a conversation and its first events in one transaction. One
        created "queued" carries its place in the queue order in
        ``record.queue_order`` (see :meth:`append`); without one it raises
        ValueError, writing nothing."""
        ...

    def get_conversation(self, conversation_id: str) -> ConversationRecord | None: ...

    def cached_conversation(self, conversation_id: str) -> ConversationRecord | None:
        """The record if the store holds it in memory, without blocking; safe to call
        on the event loop. None says only that it is not in memory."""
        ...

    def list_conversations(
        self, *, status: Status | None, limit: int, cursor: str | None
    ) -> tuple[list[ConversationRecord], str | None]:
        """Newest first. Returns a page and the cursor of the next one (None at the end).

        Raises :class:`~laneway.models.InvalidCursor` for a cursor it did not issue.
        """
        ...

    def count_conversations(self, *, status: Status | None) -> int: ...

    def count_by_status(self) -> dict[Status, int]: ...

    def delete_conversation(self, conversation_id: str) -> bool:
        """Delete a conversation and all its events; False if there was none."""
        ...

    def append(
        self,
        conversation_id: str,
        events: Sequence[NewEvent],
        update: ConversationUpdate | None = None,
    ) -> list[Event]:
        """Append events with the next seqs, and apply ``update``, atomically.

        An update to the status "queued" carries the conversation's place in
        the queue order in ``queue_order``: the caller numbers runs as it
        queues them, from above :meth:`last_queue_order`, since a store that
        commits writes arriving together cannot tell which run was queued
        first. Without one it raises ValueError, writing nothing.

        Raises :class:`NotFound` when the conversation does not exist.
        """
        ...

    def search_events(
        self,
        conversation_id: str,
        flt: EventFilter,
        *,
        order: Order,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Event], str | None]:
        """A page of matching events in seq order, and the next page's cursor."""
        ...

    def count_events(self, conversation_id: str, flt: EventFilter) -> int: ...

    def get_event(self, conversation_id: str, seq: int) -> Event | None: ...

    def events_after(self, conversation_id: str, after_seq: int, limit: int) -> list[Event]:
        """Up to ``limit`` events with seq > after_seq, ascending (stream replay)."""
        ...

    def recover_interrupted(
        self, reason: str, *, room: int, requeue_reason: str, full_reason: str
    ) -> Recovery:
        """Settle, in one transaction, the runs a stopped process left; called
        once at startup, before any run starts.

        A running conversation becomes paused, with a status event carrying
        ``reason``, and its tool calls left without a result are answered ("not
        run: <reason>" for one noted as waiting, else "lost: <reason>"): its
        step may have had effects, so it is not run again unasked.

        Queued ones are taken in their queue order, the places their
        "queued" statuses were given (see :meth:`append`), which they keep.
        The first ``room`` stay queued, each with a status event "queued"
        carrying ``requeue_reason``, for the caller to queue again in that
        order; the rest become paused, with a status event carrying
        ``full_reason``."""
        ...

    def last_queue_order(self) -> int:
        """A place in the queue order no smaller than that of any conversation
        queued now (0 if none is): a caller numbers the runs it queues from the
        next one on. Does not block."""
        ...

    def mark_paused(
        self, conversation_ids: Sequence[str], reason: str, *, were_running: bool = False
    ) -> dict[str, list[Event]]:
        """Mark these conversations paused, each with a status event carrying
        ``reason``, in one transaction; return the events stored, by id. Ids of
        conversations that no longer exist are left out. ``were_running``: their
        runs were cut off mid-step, and their open tool calls are answered as
        :meth:`recover_interrupted` answers them."""
        ...

    def note_tools_waiting(self, conversation_id: str, call_ids: Sequence[str]) -> None:
        """Note tool calls that will wait for a tool token: after a crash,
        :meth:`recover_interrupted` tells a call still noted "not run" rather
        than "lost". Raises :class:`NotFound` for a deleted conversation."""
        ...

    def note_tool_begun(self, conversation_id: str, call_id: str) -> None:
        """A call noted as waiting has begun."""
        ...

    def write_problem(self) -> str | None:
        """Why the last write failed for want of a working disk; None once a
        write has succeeded since (or none ever failed)."""
        ...

    def probe_write(self) -> None:
        """Make a small write, to learn whether writes work again; raises
        :class:`StoreUnavailable` if not."""
        ...

    def close(self) -> None: ...
