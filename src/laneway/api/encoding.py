"""JSON in and out with msgspec: bodies capped at max_body_bytes, clear 400/413/422s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from laneway.api.exceptions import ApiError

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


def json_response(
    body: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        _encoder.encode(body), status_code, headers=headers, media_type="application/json"
    )


def encode(body: Any) -> bytes:
    return _encoder.encode(body)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing anything over ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def decode_body(request: Request, kind: type[T], limit: int) -> T:
    """Decode a JSON body as ``kind``: 400 when it is not JSON, 422 naming the field
    path when it does not fit."""
    raw = await read_body(request, limit)
    if not raw.strip():
        raise ApiError(400, "a JSON body is required")
    try:
        document = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # JSON is UTF-8; msgspec raises the latter for bytes that are not.
        raise ApiError(400, f"malformed JSON: {exc}") from exc
    return convert(document, kind, strict=True)


def convert(value: Any, kind: type[T], *, strict: bool) -> T:
    try:
        return msgspec.convert(value, kind, strict=strict)
    except msgspec.ValidationError as exc:
        raise ApiError(422, str(exc)) from exc


def decode_query(request: HTTPConnection, kind: type[T]) -> T:
    """Query parameters as ``kind``; strings are parsed (non-strict), 422 on misfit.

    A parameter given twice is a 422 rather than a silent pick of one value.
    """
    params: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key in params:
            raise ApiError(422, f"query parameter {key!r} is given more than once")
        params[key] = value
    known = {k: v for k, v in params.items() if k in _fields(kind)}
    return convert(known, kind, strict=False)


def _fields(kind: type[Any]) -> tuple[str, ...]:
    fields: tuple[str, ...] = getattr(kind, "__struct_fields__", ())
    return fields
