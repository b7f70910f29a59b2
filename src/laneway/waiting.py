"""Waiting for a run to end, for a client that would rather ask once than follow
a stream: the answer is the conversation and the events stored since.

A wait holds no thread and no lane token: it awaits the run's ``done`` event on
the loop, and then reads the events from the store once, through the io lane.
It never touches the run, so a wait cancelled (its client gone) leaves the run
as it was.

Which run to wait for is the one the conversation has as the request that
started or joined it returns. The service returns only once a run has taken the
message (one about to end hands it on to a run of its own first), and that run
keeps its handle until it has fully ended, a restart in the same token included.
A handle found gone has ended already, so the wait answers at once rather than
miss its end; one found new (the message's run ended and another began, in the
moment the service read the conversation back) began after the message, so the
wait only lasts longer. A step the watchdog has marked stuck ends its run only
when it returns: until then a wait sees the status "stuck" and times out.
"""

from __future__ import annotations

from dataclasses import dataclass

from laneway.models import MAX_PAGE, Conversation, Event, EventFilter
from laneway.runhandle import RunHandle
from laneway.service import ConversationService

# A wait answers at most this many events, oldest first; the events route pages on.
MAX_WAIT_EVENTS = MAX_PAGE


@dataclass(frozen=True)
class Waited:
    conversation: Conversation
    events: list[Event]
    # Where the events route continues, when there were more than MAX_WAIT_EVENTS.
    next_cursor: str | None
    # False when the run was still queued or running as the timeout passed.
    ended: bool


class RunWait:
    """A wait for one run of a conversation, or for none, with the events after
    ``after_seq``. Make one with :func:`after_create`, :func:`after_message` or
    :func:`current_run`."""

    def __init__(
        self,
        service: ConversationService,
        conversation_id: str,
        run: RunHandle | None,
        after_seq: int,
        *,
        waits: bool = True,
    ) -> None:
        self.service = service
        self.conversation_id = conversation_id
        self.run = run
        self.after_seq = after_seq
        # False: no run was asked for, so there is none to wait for.
        self.waits = waits

    async def until_ended(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the run to end; True once it has (or if
        there was none to wait for)."""
        if not self.waits:
            return True
        return await self.service.run_ended(self.conversation_id, self.run, timeout_s)

    async def read(self, *, ended: bool) -> Waited:
        """The conversation and its events now. Raises NotFound if it has been
        deleted meanwhile."""
        cid = self.conversation_id
        events, next_cursor = await self.service.search_events(
            cid, EventFilter(after_seq=self.after_seq), limit=MAX_WAIT_EVENTS
        )
        return Waited(await self.service.get(cid), events, next_cursor, ended)

    async def result(self, timeout_s: float) -> Waited:
        return await self.read(ended=await self.until_ended(timeout_s))


def _run_of(service: ConversationService, conversation_id: str) -> RunHandle | None:
    return service.runs.handles.get(conversation_id)


# The two below are to be called the moment the service's call returns, with no
# await in between, while the run it started or joined is still the current one.


def after_create(service: ConversationService, conversation: Conversation) -> RunWait:
    """A wait for the run :meth:`ConversationService.create` just started, if it
    did, with every event from the first."""
    return RunWait(service, conversation.id, _run_of(service, conversation.id), 0)


def after_message(service: ConversationService, message: Event, *, run: bool) -> RunWait:
    """A wait for the run that reads the message
    :meth:`ConversationService.send_message` just stored, if ``run``, with the
    events from the message on."""
    cid = message.conversation_id
    return RunWait(service, cid, _run_of(service, cid), message.seq - 1, waits=run)


def current_run(service: ConversationService, conversation_id: str, after_seq: int = 0) -> RunWait:
    """A wait for the run queued or running now, if any, with the events after
    ``after_seq``. An unknown conversation is found out on :meth:`RunWait.read`."""
    return RunWait(service, conversation_id, _run_of(service, conversation_id), after_seq)
