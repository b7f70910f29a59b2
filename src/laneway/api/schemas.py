"""Request and response bodies and query strings of the HTTP API, as msgspec types.

The same types decode requests, encode responses and generate the OpenAPI schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from laneway.api.timestamps import Timestamp
from laneway.cluster.instances import Instance
from laneway.lanes import LanesMode, LaneSnapshot
from laneway.models import (
    AgentSpec,
    Conversation,
    Event,
    EventKind,
    EventSource,
    IfRunning,
    Limit,
    Order,
    Status,
)

# How long a wait may last: a waiting request holds a connection, not a thread.
DEFAULT_WAIT_S = 60.0
MAX_WAIT_S = 600.0

# No NUL: a PostgreSQL text column cannot hold one.
Title = Annotated[str, msgspec.Meta(max_length=500, pattern="^[^\x00]*$")]
MaxSteps = Annotated[int, msgspec.Meta(ge=1, le=100_000)]
# SQLite integers are signed 64-bit; a larger seq cannot exist, so it is refused.
MAX_SEQ = 2**63 - 1
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
Cursor = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
WaitSeconds = Annotated[
    float,
    msgspec.Meta(
        gt=0,
        le=MAX_WAIT_S,
        description="How long to wait at most; past it the answer is 202 and the run goes on",
    ),
]


class CreateConversation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    agent: AgentSpec | None = None
    title: Title = ""
    initial_message: str | None = None
    # Defaults to true when initial_message is given.
    run: bool | None = None
    max_steps: MaxSteps = 50
    wait: Annotated[
        bool, msgspec.Meta(description="Answer once the run this starts has ended (a WaitResult)")
    ] = False
    wait_timeout_s: WaitSeconds = DEFAULT_WAIT_S


class SendMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    content: str
    run: bool = True
    # What the message does to a run queued or running: see models.IfRunning.
    if_running: IfRunning = "enqueue"
    wait: Annotated[
        bool,
        msgspec.Meta(description="Answer once the run that reads it has ended (a WaitResult)"),
    ] = False
    wait_timeout_s: WaitSeconds = DEFAULT_WAIT_S


class ResizeLane(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    size: Annotated[int, msgspec.Meta(ge=1, le=100_000)]


# Query parameters left out are UNSET rather than None: parsing a query string
# is lax (it must turn "5" into 5), and lax parsing reads "null" as None, which
# would make ?status=null a silent "no filter".


class ListQuery(msgspec.Struct, frozen=True):
    status: Status | UnsetType = UNSET
    limit: Limit = 50
    cursor: Cursor | UnsetType = UNSET


class CountQuery(msgspec.Struct, frozen=True):
    status: Status | UnsetType = UNSET


class EventCountQuery(msgspec.Struct, frozen=True):
    kind: EventKind | UnsetType = UNSET
    source: EventSource | UnsetType = UNSET
    text: str | UnsetType = UNSET
    after_seq: Seq | UnsetType = UNSET
    before_seq: Seq | UnsetType = UNSET
    since: Timestamp | UnsetType = UNSET
    until: Timestamp | UnsetType = UNSET


class EventQuery(EventCountQuery, frozen=True):
    order: Order = "asc"
    limit: Limit = 50
    cursor: Cursor | UnsetType = UNSET


class StreamQuery(msgspec.Struct, frozen=True):
    after_seq: Seq = 0
    # Exactly "true" or "false": a lax bool would also take "1" and "True".
    deltas: Annotated[
        Literal["true", "false"],
        msgspec.Meta(
            description=(
                "Also send token deltas while a step runs: SSE `event: delta` frames with no "
                '`id:`, WebSocket text frames `{"type": "delta", ...}`, each with '
                "conversation_id, step and text. Best-effort and not stored: the stored "
                "message that ends the step has the whole text"
            )
        ),
    ] = "false"


class WaitQuery(msgspec.Struct, frozen=True):
    timeout_s: WaitSeconds = DEFAULT_WAIT_S
    after_seq: Seq = 0


class ConversationPage(msgspec.Struct, frozen=True):
    items: list[Conversation]
    next_cursor: str | None


class EventPage(msgspec.Struct, frozen=True):
    items: list[Event]
    next_cursor: str | None


class Count(msgspec.Struct, frozen=True):
    count: int


class MessageAccepted(msgspec.Struct, frozen=True):
    event: Event
    conversation: Conversation


class WaitResult(msgspec.Struct, frozen=True):
    """What a wait answers: the conversation, and its events (from a create's
    first, from a message on, or after ``after_seq``), oldest first and at most
    500; ``next_cursor`` continues them on the events route when there are more."""

    conversation: Conversation
    events: list[Event]
    next_cursor: str | None


class LanesView(msgspec.Struct, frozen=True):
    mode: LanesMode
    lanes: dict[str, LaneSnapshot]


class InstancesView(msgspec.Struct, frozen=True):
    """The live laneway instances sharing the store."""

    items: list[Instance]


class Health(msgspec.Struct, frozen=True, omit_defaults=True):
    status: str
    # Why the server is not ready, when it is for want of a writable store.
    reason: str | None = None


class ErrorDetail(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    retry_after: float | None = None
    event: Event | None = None
    conversation: Conversation | None = None
    detail: Any = None


class ErrorBody(msgspec.Struct, frozen=True):
    error: ErrorDetail
