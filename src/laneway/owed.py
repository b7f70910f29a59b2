"""Statuses the server owes conversations and could not store yet.

When the store refuses writes (a full disk, an I/O error), a run that cannot
write ends, and so do the statuses the loop writes for runs (put back after a
refusal, paused while queued, stuck). What each conversation is owed is kept
here: reads show it at once, so that no conversation shows ``running`` with no
run behind it; it is written before anything else is written for that
conversation; and a task of the service's retries every second until the
store takes writes again, probing the store when nothing is owed but the last
write failed, so that readiness comes back without a restart. The loop's
writes for runs go through :meth:`OwedStatuses.write`, which owes what the
store refuses.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

import anyio
import msgspec

from laneway.broker import EventBroker
from laneway.lanes import Lane
from laneway.models import ConversationRecord, ConversationUpdate, Event, NewEvent
from laneway.store.base import EventStore, NotFound, StoreUnavailable

log = logging.getLogger("laneway.store")

# How often writes are tried again while the store refuses them; also the
# Retry-After of a refused write.
RETRY_S = 1.0


class Append(Protocol):
    """The service's write: store events, then publish them."""

    async def __call__(
        self,
        conversation_id: str,
        events: Sequence[NewEvent],
        update: ConversationUpdate | None = None,
        *,
        patient: bool = False,
    ) -> list[Event]: ...


class _Owed:
    __slots__ = ("events", "lock", "update")

    def __init__(self) -> None:
        self.events: list[NewEvent] = []
        self.update = ConversationUpdate()
        # Held while the owed write is under way, so that a write for the same
        # conversation waits until it has landed.
        self.lock = anyio.Lock()

    def add(self, events: Sequence[NewEvent], update: ConversationUpdate | None) -> None:
        self.events += events
        if update is not None:
            self.update = msgspec.structs.replace(self.update, **update.changes())


class OwedStatuses:
    """Used on the event loop only; the service owns one."""

    def __init__(self, store: EventStore, io: Lane, broker: EventBroker, append: Append) -> None:
        self.store = store
        self.io = io
        self.broker = broker
        # The service's write, which lands what is owed first.
        self._append = append
        self._owed: dict[str, _Owed] = {}

    def __bool__(self) -> bool:
        return bool(self._owed)

    async def write(
        self, conversation_id: str, events: list[NewEvent], update: ConversationUpdate | None
    ) -> None:
        """Write what the loop owes a run it accepted (a status, a late tool
        result). Shielded, and patient with a full io lane: a client going
        away, or others filling the lane, must not leave a status that no run
        stands behind. Owed if the store refuses it; dropped for a
        conversation deleted meanwhile."""
        with anyio.CancelScope(shield=True), contextlib.suppress(NotFound):
            try:
                await self._append(conversation_id, events, update, patient=True)
            except StoreUnavailable as exc:
                self.owe(conversation_id, events, update, str(exc))
            except Exception:
                # Not the disk: a bug. Kept out of the runs' task group, which it
                # would take down with every run; the status stays as last written.
                log.exception("conversation %s: a status could not be written", conversation_id)

    def overlay(self, record: ConversationRecord) -> ConversationRecord:
        """``record`` as it will be once what it is owed is written."""
        owed = self._owed.get(record.id)
        if owed is None:
            return record
        return msgspec.structs.replace(record, **owed.update.changes())

    def forget(self, conversation_id: str) -> None:
        """Drop what is owed to a deleted conversation."""
        self._owed.pop(conversation_id, None)

    def owe(
        self,
        conversation_id: str,
        events: Sequence[NewEvent],
        update: ConversationUpdate | None,
        reason: str,
    ) -> None:
        log.error(
            "conversation %s is owed a write, kept until the store takes it: %s",
            conversation_id,
            reason,
        )
        self._owed.setdefault(conversation_id, _Owed()).add(events, update)

    async def settle(self, conversation_id: str, *, patient: bool = False) -> None:
        """Write what the conversation is owed, if anything; raises
        StoreUnavailable (it stays owed) or NotFound (it is dropped)."""
        owed = self._owed.get(conversation_id)
        if owed is None:
            return
        async with owed.lock:
            if self._owed.get(conversation_id) is not owed:
                return  # written, or dropped, while this waited
            call = self.io.run_sync_patiently if patient else self.io.run_sync
            try:
                stored = await call(self.store.append, conversation_id, owed.events, owed.update)
            except NotFound:
                self.forget(conversation_id)
                raise
            del self._owed[conversation_id]
        log.info("conversation %s: its owed write is stored", conversation_id)
        self.broker.publish(conversation_id, stored)

    async def settle_all(self) -> None:
        """Write everything owed; raises StoreUnavailable at the first refusal."""
        for conversation_id in list(self._owed):
            with contextlib.suppress(NotFound):
                await self.settle(conversation_id, patient=True)

    async def keep_settling(self) -> None:
        """Every :data:`RETRY_S`, while something is owed or the last write failed,
        try again; runs for the service's life."""
        while True:
            await anyio.sleep(RETRY_S)
            if not self._owed and self.store.write_problem() is None:
                continue
            with contextlib.suppress(StoreUnavailable):
                if self._owed:
                    await self.settle_all()
                else:
                    await self.io.run_sync_patiently(self.store.probe_write)
                    log.info("the store takes writes again")
