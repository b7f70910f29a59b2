"""One error shape for every failure: ``{"error": {"code", "message", ...}}``.

Service exceptions map to HTTP statuses here and nowhere else.
"""

from __future__ import annotations

import logging
import math

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from laneway.api.encoding import json_response
from laneway.api.exceptions import ApiError
from laneway.api.schemas import ErrorBody, ErrorDetail
from laneway.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    RunNotAdmitted,
    ShuttingDown,
    StoreUnavailable,
)
from laneway.lanes import LaneFull
from laneway.models import InvalidCursor
from laneway.owed import RETRY_S

log = logging.getLogger("laneway.api")


def error_response(err: ApiError) -> Response:
    body = ErrorBody(
        ErrorDetail(code=err.code, message=err.message, retry_after=err.retry_after, **err.extra)
    )
    headers = {}
    if err.retry_after is not None:
        # Retry-After takes whole seconds; round up so a client never retries early.
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="laneway"'
    return json_response(body, err.status, headers=headers)


async def refuse(scope: Scope, receive: Receive, send: Send, err: ApiError) -> None:
    """Answer a request, or a WebSocket handshake, with ``err`` before any route sees it.

    A handshake gets the same HTTP answer through the ASGI WebSocket denial
    response, which uvicorn and hypercorn both offer; a server without it can
    only close the handshake, which clients see as a 403.
    """
    if scope["type"] == "websocket" and "websocket.http.response" not in scope.get(
        "extensions", {}
    ):
        await send({"type": "websocket.close", "code": 1008, "reason": err.message[:120]})
        return
    await error_response(err)(scope, receive, send)


def to_api_error(exc: Exception) -> ApiError | None:
    """Map a service exception to its answer; None for an unexpected exception."""
    match exc:
        case ApiError():
            return exc
        case NotFound():
            return ApiError(404, str(exc))
        case Conflict():
            return ApiError(409, str(exc))
        case InvalidRequest():
            return ApiError(422, str(exc))
        case InvalidCursor():
            return ApiError(422, f"cursor: {exc}")
        case ShuttingDown():
            return ApiError(503, str(exc), code="shutting_down", retry_after=1.0)
        case StoreUnavailable():
            return ApiError(
                503,
                f"{exc}; nothing of this request was stored, retry it later",
                code="store_unavailable",
                retry_after=RETRY_S,
            )
        case RunNotAdmitted():
            return ApiError(
                429,
                "the run queue is full; what you sent was kept, retry the run later",
                retry_after=exc.retry_after,
                event=exc.event,
                conversation=exc.conversation,
            )
        case LaneFull() if exc.lane == "run":
            return ApiError(429, str(exc), retry_after=exc.retry_after)
        case LaneFull():
            return ApiError(503, str(exc), code="lane_full", retry_after=exc.retry_after)
    return None


async def handle_exception(request: Request, exc: Exception) -> Response:
    err = to_api_error(exc)
    if err is None:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        err = ApiError(500, "internal error", code="internal")
    return error_response(err)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = error_response(ApiError(exc.status_code, exc.detail))
    # Starlette's own headers matter: a 405 carries Allow.
    response.headers.update(exc.headers or {})
    return response
