"""A Python client of laneway's HTTP API, blocking (:class:`Client`) or async
(:class:`AsyncClient`, under asyncio or trio), over httpx.

Answers are the server's own msgspec records, decoded as the server encodes
them: :class:`~laneway.models.Conversation`, :class:`~laneway.models.Event`,
:class:`~laneway.api.schemas.LanesView` and so on; a wait answers a
:class:`WaitAnswer`; ``follow`` gives events and, if asked for,
:class:`~laneway.deltas.DeltaBody` deltas. Error answers raise a
:class:`LanewayError` subclass, one for each status.

    with Client("http://127.0.0.1:8000") as client:
        conv = client.create_conversation(initial_message="hello", wait=True)
"""

from laneway.api.schemas import Health, InstancesView, LanesView, MessageAccepted
from laneway.client.asynchronous import AsyncClient
from laneway.client.errors import (
    BadRequest,
    Conflict,
    Invalid,
    LanewayError,
    NotFound,
    QueueFull,
    Unauthorized,
    Unavailable,
)
from laneway.client.records import (
    EventFilters,
    EventSearch,
    MessageOptions,
    NewConversation,
    WaitAnswer,
)
from laneway.client.sync import Client
from laneway.deltas import DeltaBody
from laneway.lanes import LaneSnapshot
from laneway.models import AgentSpec, Conversation, Event, Usage

__all__ = [
    "AgentSpec",
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "Conversation",
    "DeltaBody",
    "Event",
    "EventFilters",
    "EventSearch",
    "Health",
    "InstancesView",
    "Invalid",
    "LaneSnapshot",
    "LanesView",
    "LanewayError",
    "MessageAccepted",
    "MessageOptions",
    "NewConversation",
    "NotFound",
    "QueueFull",
    "Unauthorized",
    "Unavailable",
    "Usage",
    "WaitAnswer",
]
