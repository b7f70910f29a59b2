"""The OpenAPI 3.1 document, generated from the operation table and msgspec types."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from laneway.api.routing import PATH_PARAM_SCHEMAS, Operation
from laneway.api.schemas import ErrorBody

_PATH_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")
_ERROR_TEXT = {
    400: "Malformed JSON",
    401: "Missing or wrong API key",
    404: "Unknown conversation, event or lane",
    409: "A run is already queued or running",
    413: "Body over max_body_bytes",
    422: "Validation error; the message names the field",
    431: "Request line and headers over max_header_bytes",
    429: "Run queue full; see Retry-After",
    503: "io lane full, store unable to write, or server not ready; see Retry-After",
}


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is either sent or not: it can never be JSON null."""
    options = schema.get("anyOf")
    if options is None:
        return schema
    rest = [s for s in options if s.get("type") != "null"]
    trimmed = {k: v for k, v in schema.items() if k != "anyOf"}
    if len(rest) == 1:
        return {**rest[0], **trimmed}
    return {**trimmed, "anyOf": rest}


def _parameters(op: Operation, components: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name, convertor in _PATH_PARAM.findall(op.path):
        schema = op.path_schemas.get(name, PATH_PARAM_SCHEMAS[convertor])
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if op.query is not None:
        component = components[op.query.__name__]
        required = set(component.get("required", ()))
        for name, schema in component["properties"].items():
            params.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": _non_null(schema),
                }
            )
    return params


def _error_codes(op: Operation) -> set[int]:
    codes = {code for code in op.responses if code >= 400}
    codes.add(431)
    if op.path.startswith("/api"):
        codes.add(503)
    if op.body is not None:
        codes |= {400, 413, 422}
    if op.query is not None:
        codes.add(422)
    if op.auth:
        codes.add(401)
    return codes


def _kinds(kind: Any) -> tuple[Any, ...]:
    """The body types of a response: one, none, or a tuple of those it may be."""
    if kind is None:
        return ()
    return kind if isinstance(kind, tuple) else (kind,)


def build_document(operations: Sequence[Operation], *, title: str, version: str) -> dict[str, Any]:
    types: list[Any] = [ErrorBody]
    for op in operations:
        for kind in (op.body, op.query, *op.responses.values()):
            for k in _kinds(kind):
                if k not in types:
                    types.append(k)
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    schema_of = dict(zip(map(id, types), schemas, strict=True))
    error = {"application/json": {"schema": schema_of[id(ErrorBody)]}}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        responses: dict[str, Any] = {}
        for code, kind in sorted(op.responses.items()):
            if code >= 400:
                continue
            answer: dict[str, Any] = {"description": op.descriptions.get(code, op.summary)}
            kinds = [schema_of[id(k)] for k in _kinds(kind)]
            if kinds:
                schema = kinds[0] if len(kinds) == 1 else {"anyOf": kinds}
                answer["content"] = {"application/json": {"schema": schema}}
            elif op.produces:
                answer["content"] = {media: {"schema": {"type": "string"}} for media in op.produces}
            responses[str(code)] = answer
        for code in sorted(_error_codes(op)):
            responses[str(code)] = {"description": _ERROR_TEXT[code], "content": error}
        operation: dict[str, Any] = {
            "operationId": op.endpoint.__name__,
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": _parameters(op, components),
            "responses": responses,
        }
        if op.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[id(op.body)]}},
            }
        operation["security"] = [{"apiKey": []}, {"bearer": []}] if op.auth else []
        paths.setdefault(_PATH_PARAM.sub(r"{\1}", op.path), {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Session-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }
