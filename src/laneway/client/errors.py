"""The errors a laneway server answers with, one class per status, all under
:class:`LanewayError`.

Each carries the server's ``{"error": {"code", "message", ...}}``. Failures to
reach the server at all stay httpx's own (``httpx.TransportError``).
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import msgspec

from laneway.api.schemas import ErrorBody
from laneway.models import Conversation, Event

__all__ = [
    "BadRequest",
    "Conflict",
    "Invalid",
    "LanewayError",
    "NotFound",
    "QueueFull",
    "Unauthorized",
    "Unavailable",
    "error_from_response",
]


class LanewayError(Exception):
    """An error answer from the server: ``status``, the server's ``code`` and
    ``message``; a status with no class of its own (405, 413, 431, 500) is this.

    ``retry_after`` (seconds) comes with 429 and 503. A 429 for a create or a
    message also says what the server stored all the same: ``conversation``,
    and for a message ``event``.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        event: Event | None = None,
        conversation: Conversation | None = None,
        detail: Any = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.event = event
        self.conversation = conversation
        self.detail = detail


class BadRequest(LanewayError):
    """400: the body is not JSON (or is nested too deep)."""


class Unauthorized(LanewayError):
    """401: the API key is missing or wrong."""


class NotFound(LanewayError):
    """404: no such conversation, event or lane."""


class Conflict(LanewayError):
    """409: the conversation's state refuses it (a run is already queued or running)."""


class Invalid(LanewayError):
    """422: a field, parameter or cursor the server does not take; the message names it."""


class QueueFull(LanewayError):
    """429: the run queue is full; what was sent is kept (see ``event`` and
    ``conversation``). Ask for the run again after ``retry_after``."""


class Unavailable(LanewayError):
    """503: the server cannot take it now (its io lane is full, its store cannot
    write, or it is shutting down); ``code`` says which."""


_BY_STATUS: dict[int, type[LanewayError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    422: Invalid,
    429: QueueFull,
    503: Unavailable,
}

_error_body = msgspec.json.Decoder(ErrorBody)


def error_from_response(response: httpx.Response) -> LanewayError:
    """The error an answer of ``response.status_code`` stands for; its body must be read.

    A body that is not laneway's (a proxy's page, a server's bare 400 for an
    over-long head) still gives the status's class, with the text as message.
    """
    cls = _BY_STATUS.get(response.status_code, LanewayError)
    retry_after = _retry_after(response)
    try:
        detail = _error_body.decode(response.content).error
    except msgspec.DecodeError:
        text = response.text.strip()[:500] or response.reason_phrase
        return cls(response.status_code, "http_error", text, retry_after=retry_after)
    return cls(
        response.status_code,
        detail.code,
        detail.message,
        retry_after=retry_after if retry_after is not None else detail.retry_after,
        event=detail.event,
        conversation=detail.conversation,
        detail=detail.detail,
    )


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds; laneway sends whole seconds, never a date."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
