"""JSON in and out with msgspec: bodies capped at max_body_bytes, clear 400/413/422s.

A JSON body may nest at most :data:`MAX_JSON_DEPTH` levels. msgspec refuses
deeper documents on its own only near the interpreter's recursion limit, which
depends on how deep the stack already is, and a document it accepted there
could fail later when encoded on another stack: so the bound is ours, far
below that limit, and every body is held to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from laneway.api.exceptions import ApiError

T = TypeVar("T")

_encoder = msgspec.json.Encoder()

MAX_JSON_DEPTH = 64
# Integral floats beyond this stay floats: no int field takes them anyway.
_INT_FLOAT_LIMIT = float(2**63)


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
    except RecursionError:
        raise _too_deep() from None
    return convert(normalise(document), kind, strict=True)


def _too_deep() -> ApiError:
    return ApiError(400, f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")


def normalise(document: Any) -> Any:
    """Hold ``document`` to :data:`MAX_JSON_DEPTH` and turn integral floats into
    ints, in place. JSON has one number type and JSON Schema's "integer" is any
    number without a fraction, so ``5.0`` is as good an integer as ``5``; msgspec's
    strict conversion, which keeps ``"5"`` from passing as a number, would refuse
    it. Iterative, so that no depth can exhaust the stack."""
    if isinstance(document, float):
        return _integral(document)
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        for key, value in list(node.items() if isinstance(node, dict) else enumerate(node)):
            if isinstance(value, float):
                node[key] = _integral(value)
            elif isinstance(value, dict | list):
                stack.append((value, depth + 1))
    return document


def _integral(value: float) -> int | float:
    return int(value) if value.is_integer() and abs(value) < _INT_FLOAT_LIMIT else value


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


def given(value: T | msgspec.UnsetType) -> T | None:
    """A query parameter's value, or None when it was left out."""
    return None if isinstance(value, msgspec.UnsetType) else value


def _fields(kind: type[Any]) -> tuple[str, ...]:
    fields: tuple[str, ...] = getattr(kind, "__struct_fields__", ())
    return fields
