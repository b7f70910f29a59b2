"""Errors the conversation service raises; the HTTP layer maps each to one status."""

from __future__ import annotations

from laneway.lanes import LaneFull
from laneway.models import Conversation, Event
from laneway.store.base import NotFound, StoreUnavailable

__all__ = [
    "Conflict",
    "InvalidRequest",
    "NotFound",
    "RunNotAdmitted",
    "ShuttingDown",
    "StoreUnavailable",
]


class Conflict(Exception):
    """The request contradicts the conversation's state (it is already queued or running)."""


class InvalidRequest(ValueError):
    """Input that names no agent, or an agent config the agent rejects."""


class ShuttingDown(Exception):
    """The service no longer admits runs because it is closing."""


class RunNotAdmitted(LaneFull):
    """The run queue is full. What the caller sent was stored all the same:
    ``event`` (a message) or ``conversation`` (a new one) say what was kept."""

    def __init__(
        self,
        cause: LaneFull,
        *,
        event: Event | None = None,
        conversation: Conversation | None = None,
    ) -> None:
        super().__init__(cause.lane, cause.waiting, cause.retry_after)
        self.event = event
        self.conversation = conversation
