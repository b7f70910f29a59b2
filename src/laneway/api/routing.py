"""The operation table: one declaration per route, from which both the Starlette
routes and the OpenAPI document are built, so they cannot disagree."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from laneway.api.exceptions import ApiError
from laneway.config import Settings
from laneway.service import ConversationService

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    endpoint: Endpoint
    summary: str
    tag: str
    # Status code -> body type (None: no body); used for the OpenAPI document.
    responses: Mapping[int, Any]
    body: type[Any] | None = None
    query: type[Any] | None = None
    auth: bool = True
    # Extra content types of the success answer (Server-Sent Events, Prometheus text).
    produces: tuple[str, ...] = field(default=())
    # JSON schemas of path parameters that are not plain strings or ints.
    path_schemas: Mapping[str, Any] = field(default_factory=dict)


def service_of(request: HTTPConnection) -> ConversationService:
    service: ConversationService | None = getattr(request.app.state, "service", None)
    if service is None:
        raise ApiError(503, "the server is starting or stopping", code="not_ready", retry_after=1)
    return service


def settings_of(request: HTTPConnection) -> Settings:
    settings: Settings = request.app.state.settings
    return settings
