"""Plain data records shared by the store, the service and the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

import msgspec

Status = Literal["idle", "queued", "running", "paused", "finished", "error", "stuck"]
EventKind = Literal["message", "tool_call", "tool_result", "status", "error"]
EventSource = Literal["user", "agent", "tool", "system"]
Order = Literal["asc", "desc"]
# What a message does to a run queued or running: the run reads it at its next
# step ("enqueue"), its step is stopped and it goes on with the message at once
# ("interrupt"), or the message is refused and not stored ("reject").
IfRunning = Literal["enqueue", "interrupt", "reject"]

EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)
EVENT_SOURCES: tuple[EventSource, ...] = get_args(EventSource)

STATUSES: tuple[Status, ...] = ("idle", "queued", "running", "paused", "finished", "error", "stuck")
# A conversation in one of these holds or waits for a run token.
ACTIVE_STATUSES: frozenset[Status] = frozenset({"queued", "running"})

MAX_PAGE = 500
Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)]


def utc_now() -> str:
    """The current time as RFC 3339 UTC with microseconds.

    The fixed width makes timestamps compare correctly as strings, which is how
    the store orders and filters them.
    """
    return format_timestamp(datetime.now(UTC))


def format_timestamp(moment: datetime) -> str:
    # isoformat pads the year to four digits, where strftime's %Y gives "5" for
    # the year 5; it is also faster, and the store stamps every commit with it.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


class AgentSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which agent a conversation runs: a built-in kind or ``package.module:factory``."""

    kind: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "echo"
    config: dict[str, Any] = msgspec.field(default_factory=dict)


class Event(msgspec.Struct, frozen=True):
    """One entry of a conversation's append-only log; ``seq`` runs 1, 2, 3… without gaps."""

    seq: int
    id: str
    conversation_id: str
    timestamp: str
    kind: EventKind
    source: EventSource
    data: dict[str, Any]


class NewEvent(msgspec.Struct, frozen=True):
    """An event before the store gives it a seq, an id and a timestamp."""

    kind: EventKind
    source: EventSource
    data: dict[str, Any]


def status_event(status: Status, reason: str | None = None) -> NewEvent:
    """The event that records a conversation's status changing to ``status``."""
    data: dict[str, Any] = {"status": status}
    if reason is not None:
        data["reason"] = reason
    return NewEvent("status", "system", data)


class Usage(msgspec.Struct, frozen=True):
    """Tokens LLM calls used."""

    prompt_tokens: int
    completion_tokens: int


class ConversationRecord(msgspec.Struct, frozen=True):
    """What the store keeps of a conversation; live fields come from the service."""

    id: str
    title: str
    status: Status
    agent: AgentSpec
    max_steps: int
    created_at: str
    updated_at: str
    steps_done: int = 0
    last_error: str | None = None
    last_seq: int = 0
    # The seq of the last user message a run has handed to the agent.
    read_seq: int = 0
    # The place in the queue order given when the status last became "queued"
    # (see EventStore.recover_interrupted); None if it never has.
    queue_order: int | None = None
    # Tokens the conversation's LLM steps have used, summed.
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ConversationUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """Fields to change together with an append; UNSET leaves a field alone."""

    status: Status | msgspec.UnsetType = msgspec.UNSET
    steps_done: int | msgspec.UnsetType = msgspec.UNSET
    last_error: str | msgspec.UnsetType | None = msgspec.UNSET
    read_seq: int | msgspec.UnsetType = msgspec.UNSET
    # Given with the status "queued" (see EventStore.append).
    queue_order: int | msgspec.UnsetType | None = msgspec.UNSET
    prompt_tokens: int | msgspec.UnsetType = msgspec.UNSET
    completion_tokens: int | msgspec.UnsetType = msgspec.UNSET

    def changes(self) -> dict[str, Any]:
        """The fields this update sets, by name."""
        # __struct_fields__, not msgspec.structs.fields(): that one resolves type
        # hints on every call (~80 us), and this runs under the store's write lock.
        return {
            name: value
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not msgspec.UNSET
        }


class EventFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Filters shared by event search and event count; all given ones must match.

    ``text`` matches message text case-insensitively. ``after_seq`` and
    ``before_seq`` are exclusive bounds; ``since`` and ``until`` are inclusive
    RFC 3339 bounds in the stored form (see :func:`format_timestamp`).
    """

    kind: EventKind | None = None
    source: EventSource | None = None
    text: str | None = None
    after_seq: int | None = None
    before_seq: int | None = None
    since: str | None = None
    until: str | None = None


class InvalidCursor(ValueError):
    """A pagination cursor that this server did not hand out, or for another query."""


class Conversation(msgspec.Struct, frozen=True):
    """A conversation as clients see it: the stored record plus live run state."""

    id: str
    title: str
    status: Status
    agent: AgentSpec
    max_steps: int
    created_at: str
    updated_at: str
    steps_done: int
    queue_position: int | None
    pause_requested: bool
    last_error: str | None
    usage: Usage
