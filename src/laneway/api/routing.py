"""The operation table: one declaration per route, from which both the Starlette
routes and the OpenAPI document are built, so they cannot disagree."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from laneway.api.exceptions import ApiError
from laneway.config import Settings
from laneway.service import ConversationService

Endpoint = Callable[[Request], Awaitable[Response]]

# Ids are 32 hex characters; a longer one names no conversation, and a path
# that does not match is a 404 that echoes nothing of it.
MAX_ID_LENGTH = 128


class ConversationIdConvertor(Convertor[str]):
    regex = f"[^/]{{1,{MAX_ID_LENGTH}}}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("cid", ConversationIdConvertor())
# The JSON schema of each path parameter convertor used in the operation table.
PATH_PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "": {"type": "string"},
    "int": {"type": "integer", "minimum": 0},
    "cid": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    endpoint: Endpoint
    summary: str
    tag: str
    # Status code -> body type (None: no body; a tuple: any one of those types);
    # used for the OpenAPI document.
    responses: Mapping[int, Any]
    body: type[Any] | None = None
    query: type[Any] | None = None
    auth: bool = True
    # Extra content types of the success answer (Server-Sent Events, Prometheus text).
    produces: tuple[str, ...] = field(default=())
    # What a success answer means, by status code, where the summary is not enough.
    descriptions: Mapping[int, str] = field(default_factory=dict)
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
