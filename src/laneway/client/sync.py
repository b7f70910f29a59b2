"""The blocking client: :class:`Client`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Literal, Self, TypeVar, Unpack, overload

import httpx
from httpx_sse import EventSource

from laneway.api.schemas import DEFAULT_WAIT_S, Health, InstancesView, LanesView, MessageAccepted
from laneway.client._core import DEFAULT_TIMEOUT_S, Core, Pages, Pause, Plan
from laneway.client._follow import DEFAULT_RECONNECT_TIMEOUT_S, Follow, FollowItem
from laneway.client.errors import LanewayError
from laneway.client.records import (
    EventFilters,
    EventSearch,
    MessageOptions,
    NewConversation,
    WaitAnswer,
)
from laneway.lanes import LaneName, LaneSnapshot
from laneway.models import Conversation, Event, Status

T = TypeVar("T")


class Client:
    """A client of one laneway server, over httpx; use it as a context manager,
    or call :meth:`close`.

    ``api_key`` defaults to ``LANEWAY_API_KEY`` from the environment. A 429 or
    503 is sent again up to ``retries`` times, after its ``Retry-After``; for a
    create or a message refused a run (429), the run is asked for again instead,
    since the server kept what was sent. Every error answer raises a
    :class:`~laneway.client.LanewayError`; a server that cannot be reached
    raises httpx's ``TransportError``. ``transport`` replaces httpx's own (a
    ``MockTransport`` in tests).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = 0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = Core(base_url, api_key, timeout_s=timeout_s, retries=retries)
        self._http = httpx.Client(transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _drive(self, plan: Plan[T]) -> T:
        reply: httpx.Response | None = None
        try:
            while True:
                step = plan.send(reply)
                if isinstance(step, Pause):
                    time.sleep(step.seconds)
                    reply = None
                else:
                    reply = self._http.send(step)
        except StopIteration as done:
            result: T = done.value
            return result

    def _every(self, pages: Pages[T]) -> Iterator[T]:
        items, cursor = self._drive(pages.fetch(pages.start))
        yield from items
        while cursor is not None:
            items, cursor = self._drive(pages.fetch(cursor))
            yield from items

    # -- conversations ---------------------------------------------------------

    @overload
    def create_conversation(
        self, *, wait: Literal[False] = False, **fields: Unpack[NewConversation]
    ) -> Conversation: ...
    @overload
    def create_conversation(
        self, *, wait: Literal[True], **fields: Unpack[NewConversation]
    ) -> WaitAnswer: ...
    @overload
    def create_conversation(
        self, *, wait: bool, **fields: Unpack[NewConversation]
    ) -> Conversation | WaitAnswer: ...
    def create_conversation(
        self, *, wait: bool = False, **fields: Unpack[NewConversation]
    ) -> Conversation | WaitAnswer:
        """Create a conversation (``agent``, ``title``, ``initial_message``,
        ``run``, ``max_steps``). With ``wait``, answer once the run it starts
        has ended, or past ``wait_timeout_s`` (``timed_out``)."""
        return self._drive(self._core.create_conversation(wait, fields))

    def list_conversations(
        self, *, status: Status | None = None, page_size: int | None = None
    ) -> Iterator[Conversation]:
        """Every conversation (of ``status``), newest first, fetched ``page_size`` at a time."""
        return self._every(self._core.list_conversations(status, page_size))

    def count_conversations(self, *, status: Status | None = None) -> int:
        return self._drive(self._core.count_conversations(status))

    def get_conversation(self, conversation_id: str) -> Conversation:
        return self._drive(self._core.get_conversation(conversation_id))

    def delete_conversation(self, conversation_id: str) -> None:
        """Delete it and its events; a run in flight is stopped first."""
        self._drive(self._core.delete_conversation(conversation_id))

    @overload
    def send_message(
        self,
        conversation_id: str,
        content: str,
        *,
        wait: Literal[False] = False,
        **options: Unpack[MessageOptions],
    ) -> MessageAccepted: ...
    @overload
    def send_message(
        self,
        conversation_id: str,
        content: str,
        *,
        wait: Literal[True],
        **options: Unpack[MessageOptions],
    ) -> WaitAnswer: ...
    @overload
    def send_message(
        self, conversation_id: str, content: str, *, wait: bool, **options: Unpack[MessageOptions]
    ) -> MessageAccepted | WaitAnswer: ...
    def send_message(
        self,
        conversation_id: str,
        content: str,
        *,
        wait: bool = False,
        **options: Unpack[MessageOptions],
    ) -> MessageAccepted | WaitAnswer:
        """Send a user message and, with ``run``, have a run read it.
        ``if_running`` says what it does to a run in flight: ``enqueue`` (read
        at its next step), ``interrupt`` (its step stopped, the run goes on with
        the message) or ``reject`` (:class:`~laneway.client.Conflict`). With
        ``wait``, answer once that run has ended, from the message on, or past
        ``wait_timeout_s`` (``timed_out``)."""
        return self._drive(self._core.send_message(conversation_id, content, wait, options))

    def run(self, conversation_id: str) -> Conversation:
        """Queue a run; :class:`~laneway.client.Conflict` if one is queued or running."""
        return self._drive(self._core.run(conversation_id))

    def wait(
        self, conversation_id: str, *, timeout_s: float = DEFAULT_WAIT_S, after_seq: int = 0
    ) -> WaitAnswer:
        """Wait for the run queued or running to end (at once if none is); the
        events after ``after_seq``, at most 500 (``next_cursor`` goes on)."""
        return self._drive(self._core.wait(conversation_id, timeout_s, after_seq))

    def pause(self, conversation_id: str) -> Conversation:
        """Pause its run at the next step boundary (a queued one leaves the queue)."""
        return self._drive(self._core.pause(conversation_id))

    def interrupt(self, conversation_id: str) -> Conversation:
        """Stop its run now: the step in flight is asked to stop."""
        return self._drive(self._core.interrupt(conversation_id))

    # -- events ----------------------------------------------------------------

    def iter_events(self, conversation_id: str, **search: Unpack[EventSearch]) -> Iterator[Event]:
        """Every event that matches, in ``order`` (``asc`` by default), fetched
        ``page_size`` at a time."""
        return self._every(self._core.iter_events(conversation_id, search))

    def count_events(self, conversation_id: str, **filters: Unpack[EventFilters]) -> int:
        return self._drive(self._core.count_events(conversation_id, filters))

    def get_event(self, conversation_id: str, seq: int) -> Event:
        return self._drive(self._core.get_event(conversation_id, seq))

    def follow(
        self,
        conversation_id: str,
        after_seq: int = 0,
        *,
        deltas: bool = False,
        reconnect_timeout_s: float = DEFAULT_RECONNECT_TIMEOUT_S,
    ) -> Iterator[FollowItem]:
        """The conversation's events after ``after_seq`` as they are stored, and
        with ``deltas`` its steps' deltas (:class:`~laneway.deltas.DeltaBody`)
        as they come; it never ends by itself.

        A dropped connection or a restarted server is reconnected to with
        ``Last-Event-ID``, so every event comes once and in order; attempts
        failing in a row are retried, with back-off, for ``reconnect_timeout_s``
        before their error is raised. A deleted conversation raises
        :class:`~laneway.client.NotFound`. Deltas missed meanwhile are lost.
        """
        stream = Follow(
            self._core,
            conversation_id,
            after_seq,
            deltas=deltas,
            reconnect_timeout_s=reconnect_timeout_s,
        )
        while True:
            try:
                response = self._http.send(stream.request(), stream=True)
                try:
                    if response.status_code != 200:
                        response.read()
                    stream.opened(response)
                    for sse in EventSource(response).iter_sse():
                        if (item := stream.item(sse)) is not None:
                            yield item
                finally:
                    response.close()
                delay = stream.retry_in(None)
            except (httpx.TransportError, LanewayError) as exc:
                delay = stream.retry_in(exc)
            time.sleep(delay)

    # -- operations ------------------------------------------------------------

    def lanes(self) -> LanesView:
        """Every lane's counters (``lanes.lanes["run"].size``)."""
        return self._drive(self._core.lanes())

    def instances(self) -> InstancesView:
        """The live instances sharing the server's database (this one alone
        with SQLite)."""
        return self._drive(self._core.instances())

    def resize_lane(self, name: LaneName, size: int) -> LaneSnapshot:
        """Resize a lane live."""
        return self._drive(self._core.resize_lane(name, size))

    def health(self) -> Health:
        return self._drive(self._core.health())

    def ready(self) -> Health:
        """``status`` is ``ready``, or why not (``starting``, ``store_unavailable``)."""
        return self._drive(self._core.ready())
