"""What the sync and the async client share: every route's request, the
decoding of its answer and the mapping of its errors, and the retries.

Each operation is a *plan*: a generator that yields the requests to send and
the pauses to take, and is sent each request's response, with no I/O of its
own (as h11's and hypercorn's protocol code are). Each client is then only a
loop that sends and sleeps, in its own way (see ``Client._drive``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeAlias, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from laneway import __version__
from laneway.api.schemas import (
    ConversationPage,
    Count,
    CreateConversation,
    EventPage,
    Health,
    InstancesView,
    LanesView,
    MessageAccepted,
    ResizeLane,
    SendMessage,
)
from laneway.client.errors import (
    Conflict,
    LanewayError,
    QueueFull,
    Unavailable,
    error_from_response,
)
from laneway.client.records import (
    EventFilters,
    EventSearch,
    MessageOptions,
    NewConversation,
    WaitAnswer,
)
from laneway.lanes import LaneSnapshot
from laneway.models import Conversation, Event, Status

T = TypeVar("T")

API_KEY_VARIABLE = "LANEWAY_API_KEY"
DEFAULT_TIMEOUT_S = 10.0
# A wait answers after up to its timeout; the read may take that and this much more.
WAIT_MARGIN_S = 10.0
# A 429 or 503 without Retry-After (from something in front of laneway) waits this long.
DEFAULT_RETRY_S = 1.0
# 503s that say nothing of the request was stored: a create or a message sent
# again is not stored twice. ("shutting_down" may come after the store.)
_NOTHING_STORED = frozenset({"lane_full", "store_unavailable"})

CONVERSATIONS = "/api/conversations"


@dataclass(frozen=True)
class Pause:
    """Sleep this long, then go on (a retry honouring Retry-After, a reconnect's back-off)."""

    seconds: float


Step: TypeAlias = httpx.Request | Pause
# A request is answered with its response, a pause with None.
Plan: TypeAlias = Generator[Step, httpx.Response | None, T]
Page: TypeAlias = tuple[list[T], str | None]


class Retries:
    """The resends left to one call of a client method, shared by its requests."""

    def __init__(self, left: int) -> None:
        self.left = left

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def conversation_path(conversation_id: str, tail: str = "") -> str:
    return f"{CONVERSATIONS}/{quote(conversation_id, safe='')}{tail}"


def decode(response: httpx.Response, type_: type[T]) -> T:
    return msgspec.json.decode(response.content, type=type_)


def _decoder(type_: type[T]) -> Callable[[httpx.Response], T]:
    return lambda response: decode(response, type_)


def _count(response: httpx.Response) -> int:
    return decode(response, Count).count


def _nothing(response: httpx.Response) -> None:
    return None


def _health(response: httpx.Response) -> Health:
    try:
        return decode(response, Health)
    except msgspec.DecodeError:
        # Not laneway's answer: a proxy's, say.
        raise error_from_response(response) from None


def _waited(response: httpx.Response) -> WaitAnswer:
    return msgspec.structs.replace(
        decode(response, WaitAnswer), timed_out=response.status_code == 202
    )


def _conversation_page(response: httpx.Response) -> Page[Conversation]:
    page = decode(response, ConversationPage)
    return page.items, page.next_cursor


def _event_page(response: httpx.Response) -> Page[Event]:
    page = decode(response, EventPage)
    return page.items, page.next_cursor


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _resendable(error: LanewayError, *, stores: bool) -> bool:
    if isinstance(error, Unavailable):
        return not stores or error.code in _NOTHING_STORED
    # A refused run of a create or a message is asked for again, not resent:
    # the server kept what was sent (see Core._run_kept).
    return isinstance(error, QueueFull) and not stores


def retry_delay(error: LanewayError) -> float:
    return DEFAULT_RETRY_S if error.retry_after is None else error.retry_after


class Pages(Generic[T]):
    """Every page of a listing: :meth:`fetch` plans one, from ``start`` on."""

    def __init__(
        self,
        core: Core,
        path: str,
        params: Mapping[str, object],
        decode_page: Callable[[httpx.Response], Page[T]],
    ) -> None:
        self.core = core
        self.path = path
        self.start = params.get("cursor")
        self.params = {name: value for name, value in params.items() if name != "cursor"}
        self.decode_page = decode_page

    def fetch(self, cursor: object) -> Plan[Page[T]]:
        request = self.core.request("GET", self.path, params={**self.params, "cursor": cursor})
        return self.core.call(request, self.decode_page)


class Core:
    """One server's address, key, timeout and retries, and every route's plan."""

    def __init__(
        self, base_url: str, api_key: str | None, *, timeout_s: float, retries: int
    ) -> None:
        self.base_url = base_url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get(API_KEY_VARIABLE)
        self.headers = {"Accept": "application/json", "User-Agent": f"laneway/{__version__}"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.timeout_s = timeout_s
        self.retries = retries

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, object] | None = None,
        body: msgspec.Struct | None = None,
        read_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        """``params`` left None are not sent; ``read_s`` is how long the answer may
        take to come (the client's timeout if None)."""
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        all_headers = {**self.headers, **(headers or {})}
        content = None
        if body is not None:
            content = msgspec.json.encode(body)
            all_headers["Content-Type"] = "application/json"
        t = self.timeout_s
        timeout = {"connect": t, "read": t if read_s is None else read_s, "write": t, "pool": t}
        return httpx.Request(
            method,
            self.base_url + path,
            params=query,
            content=content,
            headers=all_headers,
            extensions={"timeout": timeout},
        )

    def call(
        self,
        request: httpx.Request,
        decode_answer: Callable[[httpx.Response], T],
        *,
        retries: Retries | None = None,
        stores: bool = False,
        also_ok: int | None = None,
    ) -> Plan[T]:
        """Send ``request``, and decode its answer (a 2xx, or ``also_ok``) or raise
        its error. While retries are left, a 429 or 503 is sent again after its
        Retry-After; ``stores``: the route may have stored what it was sent before
        it refused, so only refusals that say nothing was stored are resent."""
        budget = Retries(self.retries) if retries is None else retries
        while True:
            response = yield request
            assert response is not None
            if response.is_success or response.status_code == also_ok:
                return decode_answer(response)
            error = error_from_response(response)
            if not (_resendable(error, stores=stores) and budget.take()):
                raise error
            yield Pause(retry_delay(error))

    def _store(
        self,
        path: str,
        body: CreateConversation | SendMessage,
        accepted: type[T],
        budget: Retries,
    ) -> Plan[T | WaitAnswer]:
        """Send a create or a message, which the server may store before it
        refuses the run; with ``wait``, the answer is a WaitAnswer."""
        read_s = body.wait_timeout_s + WAIT_MARGIN_S if body.wait else None
        request = self.request("POST", path, body=body, read_s=read_s)
        answer: Callable[[httpx.Response], T | WaitAnswer]
        answer = _waited if body.wait else _decoder(accepted)
        return self.call(request, answer, retries=budget, stores=True)

    def _run_kept(
        self,
        refused: QueueFull,
        budget: Retries,
        conversation_id: str,
        wait: tuple[float, int] | None,
    ) -> Plan[Conversation | WaitAnswer]:
        """Ask again for the run a full queue refused, what was sent having been
        kept; with ``wait`` (a timeout, and the seq to answer events after),
        wait for that run too."""
        if not budget.take():
            raise refused
        yield Pause(retry_delay(refused))
        try:
            conversation = yield from self.run(conversation_id, retries=budget)
        except Conflict:
            # A run has started meanwhile, and it reads what was kept.
            conversation = yield from self.get_conversation(conversation_id)
        if wait is None:
            return conversation
        return (yield from self.wait(conversation_id, *wait))

    def _get(
        self, path: str, decode_answer: Callable[[httpx.Response], T], **params: Any
    ) -> Plan[T]:
        return self.call(self.request("GET", path, params=params), decode_answer)

    def _post(self, path: str, decode_answer: Callable[[httpx.Response], T]) -> Plan[T]:
        return self.call(self.request("POST", path), decode_answer)

    # -- conversations ---------------------------------------------------------

    def create_conversation(
        self, wait: bool, fields: NewConversation
    ) -> Plan[Conversation | WaitAnswer]:
        body = CreateConversation(**fields, wait=wait)
        budget = Retries(self.retries)
        try:
            return (yield from self._store(CONVERSATIONS, body, Conversation, budget))
        except QueueFull as refused:
            if refused.conversation is None:
                raise
            waiting = (body.wait_timeout_s, 0) if wait else None
            return (yield from self._run_kept(refused, budget, refused.conversation.id, waiting))

    def list_conversations(
        self, status: Status | None, page_size: int | None
    ) -> Pages[Conversation]:
        params = {"status": status, "limit": page_size}
        return Pages(self, CONVERSATIONS, params, _conversation_page)

    def count_conversations(self, status: Status | None) -> Plan[int]:
        return self._get(CONVERSATIONS + "/count", _count, status=status)

    def get_conversation(self, conversation_id: str) -> Plan[Conversation]:
        return self._get(conversation_path(conversation_id), _decoder(Conversation))

    def delete_conversation(self, conversation_id: str) -> Plan[None]:
        return self.call(self.request("DELETE", conversation_path(conversation_id)), _nothing)

    def send_message(
        self, conversation_id: str, content: str, wait: bool, options: MessageOptions
    ) -> Plan[MessageAccepted | WaitAnswer]:
        body = SendMessage(content, wait=wait, **options)
        path = conversation_path(conversation_id, "/messages")
        budget = Retries(self.retries)
        try:
            return (yield from self._store(path, body, MessageAccepted, budget))
        except QueueFull as refused:
            if (event := refused.event) is None:
                raise
            # The events from the message on, as a message's wait answers them.
            waiting = (body.wait_timeout_s, event.seq - 1) if wait else None
            ran = yield from self._run_kept(refused, budget, conversation_id, waiting)
            return ran if isinstance(ran, WaitAnswer) else MessageAccepted(event, ran)

    def run(self, conversation_id: str, retries: Retries | None = None) -> Plan[Conversation]:
        request = self.request("POST", conversation_path(conversation_id, "/run"))
        return self.call(request, _decoder(Conversation), retries=retries)

    def wait(self, conversation_id: str, timeout_s: float, after_seq: int) -> Plan[WaitAnswer]:
        params = {"timeout_s": timeout_s, "after_seq": after_seq}
        path = conversation_path(conversation_id, "/wait")
        request = self.request("GET", path, params=params, read_s=timeout_s + WAIT_MARGIN_S)
        return self.call(request, _waited)

    def pause(self, conversation_id: str) -> Plan[Conversation]:
        return self._post(conversation_path(conversation_id, "/pause"), _decoder(Conversation))

    def interrupt(self, conversation_id: str) -> Plan[Conversation]:
        return self._post(conversation_path(conversation_id, "/interrupt"), _decoder(Conversation))

    # -- events ----------------------------------------------------------------

    def iter_events(self, conversation_id: str, search: EventSearch) -> Pages[Event]:
        params = {("limit" if name == "page_size" else name): v for name, v in search.items()}
        return Pages(self, conversation_path(conversation_id, "/events"), params, _event_page)

    def count_events(self, conversation_id: str, filters: EventFilters) -> Plan[int]:
        return self._get(conversation_path(conversation_id, "/events/count"), _count, **filters)

    def get_event(self, conversation_id: str, seq: int) -> Plan[Event]:
        return self._get(conversation_path(conversation_id, f"/events/{seq}"), _decoder(Event))

    # -- operations ------------------------------------------------------------

    def lanes(self) -> Plan[LanesView]:
        return self._get("/api/lanes", _decoder(LanesView))

    def instances(self) -> Plan[InstancesView]:
        return self._get("/api/instances", _decoder(InstancesView))

    def resize_lane(self, name: str, size: int) -> Plan[LaneSnapshot]:
        request = self.request("PUT", f"/api/lanes/{quote(name, safe='')}", body=ResizeLane(size))
        return self.call(request, _decoder(LaneSnapshot))

    def health(self) -> Plan[Health]:
        return self._get("/health", _decoder(Health))

    def ready(self) -> Plan[Health]:
        # Not ready is an answer too, a 503 with the reason.
        return self.call(self.request("GET", "/ready"), _health, also_ok=503)
