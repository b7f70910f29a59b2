"""What the client's methods take and give beyond the server's own types
(:mod:`laneway.models`, :mod:`laneway.api.schemas`), which they use as they are."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

from laneway.api.schemas import WaitResult
from laneway.models import AgentSpec, EventKind, EventSource, IfRunning, Order

__all__ = ["EventFilters", "EventSearch", "MessageOptions", "NewConversation", "WaitAnswer"]


class WaitAnswer(WaitResult, frozen=True):
    """A wait's answer, the server's :class:`~laneway.api.schemas.WaitResult`,
    and whether the run was still queued or running when the wait timed out
    (the server's 202)."""

    timed_out: bool = False


class NewConversation(TypedDict, total=False):
    """A create's fields besides ``wait``; those left out take the server's defaults."""

    agent: AgentSpec
    title: str
    initial_message: str
    # Defaults to true when initial_message is given.
    run: bool
    max_steps: int
    wait_timeout_s: float


class MessageOptions(TypedDict, total=False):
    """A message's fields besides its content and ``wait``; those left out take
    the server's defaults: ``run`` true, ``if_running`` "enqueue"."""

    run: bool
    # What the message does to a run queued or running: see models.IfRunning.
    if_running: IfRunning
    wait_timeout_s: float


class EventFilters(TypedDict, total=False):
    """Event filters, all of which must match: as for the events route.

    ``text`` matches message text case-insensitively; ``after_seq`` and
    ``before_seq`` are exclusive; ``since`` and ``until`` are inclusive, an
    RFC 3339 string with an offset or an aware datetime.
    """

    kind: EventKind
    source: EventSource
    text: str
    after_seq: int
    before_seq: int
    since: str | datetime
    until: str | datetime


class EventSearch(EventFilters, total=False):
    """Filters and paging of an event search: ``page_size`` events a request
    (the route's ``limit``), from ``cursor`` (a ``next_cursor`` the server gave
    for the same filters) if given."""

    order: Order
    page_size: int
    cursor: str
