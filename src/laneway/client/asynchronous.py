"""The async client: :class:`AsyncClient`, under asyncio or trio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Literal, Self, TypeVar, Unpack, overload

import anyio
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


class AsyncClient:
    """:class:`~laneway.client.Client`'s twin for async code: the same methods,
    arguments and answers, awaited; ``list_conversations``, ``iter_events`` and
    ``follow`` are async iterators. Close what ``follow`` gives when done with
    it early (``async with contextlib.aclosing(client.follow(...)) as items``),
    so that its connection closes at once. ``transport`` is an
    ``httpx.AsyncBaseTransport``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = 0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._core = Core(base_url, api_key, timeout_s=timeout_s, retries=retries)
        self._http = httpx.AsyncClient(transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _drive(self, plan: Plan[T]) -> T:
        reply: httpx.Response | None = None
        try:
            while True:
                step = plan.send(reply)
                if isinstance(step, Pause):
                    await anyio.sleep(step.seconds)
                    reply = None
                else:
                    reply = await self._http.send(step)
        except StopIteration as done:
            result: T = done.value
            return result

    async def _every(self, pages: Pages[T]) -> AsyncIterator[T]:
        items, cursor = await self._drive(pages.fetch(pages.start))
        for item in items:
            yield item
        while cursor is not None:
            items, cursor = await self._drive(pages.fetch(cursor))
            for item in items:
                yield item

    # -- conversations ---------------------------------------------------------

    @overload
    async def create_conversation(
        self, *, wait: Literal[False] = False, **fields: Unpack[NewConversation]
    ) -> Conversation: ...
    @overload
    async def create_conversation(
        self, *, wait: Literal[True], **fields: Unpack[NewConversation]
    ) -> WaitAnswer: ...
    @overload
    async def create_conversation(
        self, *, wait: bool, **fields: Unpack[NewConversation]
    ) -> Conversation | WaitAnswer: ...
    async def create_conversation(
        self, *, wait: bool = False, **fields: Unpack[NewConversation]
    ) -> Conversation | WaitAnswer:
        return await self._drive(self._core.create_conversation(wait, fields))

    def list_conversations(
        self, *, status: Status | None = None, page_size: int | None = None
    ) -> AsyncIterator[Conversation]:
        return self._every(self._core.list_conversations(status, page_size))

    async def count_conversations(self, *, status: Status | None = None) -> int:
        return await self._drive(self._core.count_conversations(status))

    async def get_conversation(self, conversation_id: str) -> Conversation:
        return await self._drive(self._core.get_conversation(conversation_id))

    async def delete_conversation(self, conversation_id: str) -> None:
        await self._drive(self._core.delete_conversation(conversation_id))

    @overload
    async def send_message(
        self,
        conversation_id: str,
        content: str,
        *,
        wait: Literal[False] = False,
        **options: Unpack[MessageOptions],
    ) -> MessageAccepted: ...
    @overload
    async def send_message(
        self,
        conversation_id: str,
        content: str,
        *,
        wait: Literal[True],
        **options: Unpack[MessageOptions],
    ) -> WaitAnswer: ...
    @overload
    async def send_message(
        self, conversation_id: str, content: str, *, wait: bool, **options: Unpack[MessageOptions]
    ) -> MessageAccepted | WaitAnswer: ...
    async def send_message(
        self,
        conversation_id: str,
        content: str,
        *,
        wait: bool = False,
        **options: Unpack[MessageOptions],
    ) -> MessageAccepted | WaitAnswer:
        return await self._drive(self._core.send_message(conversation_id, content, wait, options))

    async def run(self, conversation_id: str) -> Conversation:
        return await self._drive(self._core.run(conversation_id))

    async def wait(
        self, conversation_id: str, *, timeout_s: float = DEFAULT_WAIT_S, after_seq: int = 0
    ) -> WaitAnswer:
        return await self._drive(self._core.wait(conversation_id, timeout_s, after_seq))

    async def pause(self, conversation_id: str) -> Conversation:
        return await self._drive(self._core.pause(conversation_id))

    async def interrupt(self, conversation_id: str) -> Conversation:
        return await self._drive(self._core.interrupt(conversation_id))

    # -- events ----------------------------------------------------------------

    def iter_events(
        self, conversation_id: str, **search: Unpack[EventSearch]
    ) -> AsyncIterator[Event]:
        return self._every(self._core.iter_events(conversation_id, search))

    async def count_events(self, conversation_id: str, **filters: Unpack[EventFilters]) -> int:
        return await self._drive(self._core.count_events(conversation_id, filters))

    async def get_event(self, conversation_id: str, seq: int) -> Event:
        return await self._drive(self._core.get_event(conversation_id, seq))

    async def follow(
        self,
        conversation_id: str,
        after_seq: int = 0,
        *,
        deltas: bool = False,
        reconnect_timeout_s: float = DEFAULT_RECONNECT_TIMEOUT_S,
    ) -> AsyncIterator[FollowItem]:
        stream = Follow(
            self._core,
            conversation_id,
            after_seq,
            deltas=deltas,
            reconnect_timeout_s=reconnect_timeout_s,
        )
        while True:
            try:
                response = await self._http.send(stream.request(), stream=True)
                try:
                    if response.status_code != 200:
                        await response.aread()
                    stream.opened(response)
                    async with aclosing(EventSource(response).aiter_sse()) as frames:
                        async for sse in frames:
                            if (item := stream.item(sse)) is not None:
                                yield item
                finally:
                    await response.aclose()
                delay = stream.retry_in(None)
            except (httpx.TransportError, LanewayError) as exc:
                delay = stream.retry_in(exc)
            await anyio.sleep(delay)

    # -- operations ------------------------------------------------------------

    async def lanes(self) -> LanesView:
        return await self._drive(self._core.lanes())

    async def instances(self) -> InstancesView:
        return await self._drive(self._core.instances())

    async def resize_lane(self, name: LaneName, size: int) -> LaneSnapshot:
        return await self._drive(self._core.resize_lane(name, size))

    async def health(self) -> Health:
        return await self._drive(self._core.health())

    async def ready(self) -> Health:
        return await self._drive(self._core.ready())
