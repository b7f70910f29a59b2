"""Delivering a user message to a run.

A message asking for a run is read by the run in progress at its next step,
or by a new run queued for it; it is never left unread with no run coming.
Which run there is can change at every await (a run ends, another is queued
by another message), so delivery asks again after each one, and hands the
message over through the run's lifecycle (:class:`MessageStored`), whose
answer says whether that run will read it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from laneway.errors import Conflict, RunNotAdmitted, ShuttingDown
from laneway.lanes import LaneFull
from laneway.lifecycle import (
    IN_FLIGHT_PHASES,
    Accepted,
    InterruptAsked,
    MessageStored,
    Phase,
    owed,
)
from laneway.models import ConversationRecord, Event, IfRunning, NewEvent
from laneway.owed import Append
from laneway.runhandle import RunHandle
from laneway.runs import Runs


class Refusal(Protocol):
    """The service's RunNotAdmitted for a run the queue refused, carrying what
    was stored."""

    async def __call__(
        self, exc: LaneFull, conversation_id: str, event: Event | None = None
    ) -> RunNotAdmitted: ...


class MessageDelivery:
    """The service owns one; see :meth:`send`."""

    def __init__(
        self,
        runs: Runs,
        *,
        append: Append,
        record: Callable[[str], Awaitable[ConversationRecord]],
        not_admitted: Refusal,
    ) -> None:
        self.runs = runs
        self._append = append
        self._record = record
        self._not_admitted = not_admitted

    async def send(
        self, conversation_id: str, content: str, *, run: bool, if_running: IfRunning
    ) -> Event:
        """Store a user message and, with ``run``, make sure a run reads it: the run
        in progress picks it up, or a new run is queued. ``if_running`` says what
        the message does to a run queued or running (see IfRunning); "reject"
        raises Conflict, storing nothing."""
        message = NewEvent("message", "user", {"text": content})
        if if_running == "reject":
            return await self._deliver_unless_running(conversation_id, message, run=run)
        if run:
            return await self._deliver(
                conversation_id, message, interrupt=if_running == "interrupt"
            )
        [event] = await self._append(conversation_id, [message])
        handle = self.runs.handles.get(conversation_id) if if_running == "interrupt" else None
        # A running run reads every message; this one stops its step first.
        if handle is not None and owed(handle.fire(MessageStored(event.seq)), Accepted):
            self._interrupt_step(handle)
        return event

    async def _deliver_unless_running(
        self, conversation_id: str, message: NewEvent, *, run: bool
    ) -> Event:
        """Store ``message`` only if no run is queued or running: with ``run``, in
        the same write as the "queued" of the run it starts."""
        busy = Conflict(f"conversation {conversation_id!r} has a run queued or running")
        if self._run_in_flight(conversation_id):
            raise busy
        if run:
            event = await self._start_with(conversation_id, message)
            if event is None:  # a run was queued meanwhile
                raise busy
            return event
        [event] = await self._append(conversation_id, [message])
        return event

    def _run_in_flight(self, conversation_id: str) -> bool:
        handle = self.runs.handles.get(conversation_id)
        return handle is not None and handle.phase in IN_FLIGHT_PHASES

    def _interrupt_step(self, handle: RunHandle) -> None:
        if handle.phase is Phase.RUNNING:
            handle.fire(InterruptAsked(resume=True))

    async def _deliver(
        self, conversation_id: str, message: NewEvent, *, interrupt: bool = False
    ) -> Event:
        """Store ``message`` and see that a run reads it: the run in progress, or
        a new one. Each await can change which run there is, so it is asked again
        after each, until one has taken the message."""
        event: Event | None = None
        while True:
            handle = self.runs.handles.get(conversation_id)
            if handle is not None:
                if event is None:
                    [event] = await self._append(conversation_id, [message])
                elif await self._hand_to_run(handle, event):
                    if interrupt:
                        self._interrupt_step(handle)
                    return event
            elif event is None:
                event = await self._start_with(conversation_id, message)
                if event is not None:
                    return event
            else:
                try:
                    if await self.runs.start(await self._record(conversation_id)):
                        return event
                except LaneFull as exc:
                    raise await self._not_admitted(exc, conversation_id, event) from exc

    async def _hand_to_run(self, handle: RunHandle, event: Event) -> bool:
        """Give a stored message to a run; False if that run will not read it."""
        accepted = owed(handle.fire(MessageStored(event.seq)), Accepted)
        if accepted is None:
            # It has agreed to end, or is leaving the queue, or the server is
            # stopping; once it has gone, a new run reads the message (or the
            # refusal of one is the sender's).
            await handle.done.wait()
            return False
        if accepted.settling:
            # A run whose "queued" is still being written may yet find the queue full.
            await handle.settled.wait()
            return handle.state.enqueued
        return True

    async def _start_with(self, conversation_id: str, message: NewEvent) -> Event | None:
        """Queue a run and store ``message`` in the same write as its "queued"
        status; None, with nothing stored, if a run was queued meanwhile."""
        record = await self._record(conversation_id)
        try:
            # Claimed before the write, so that two messages sent at once cannot
            # both store "queued" (and so overwrite the status of a run started since).
            handle = self.runs.reserve(record)
        except (LaneFull, ShuttingDown) as exc:
            [event] = await self._append(conversation_id, [message])
            if isinstance(exc, ShuttingDown):
                raise
            raise await self._not_admitted(exc, conversation_id, event) from exc
        if handle is None:
            return None
        try:
            [event] = await self.runs.launch(handle, record, first=[message])
        except RunNotAdmitted as exc:
            raise await self._not_admitted(exc, conversation_id, exc.event) from exc
        return event
