"""The exception handlers raise to answer with an error."""

from __future__ import annotations

from typing import Any

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    431: "request_head_too_large",
    429: "run_queue_full",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answer: raised by handlers, rendered by ``errors.error_response``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _HTTP_CODES.get(status, "error")
        self.message = message
        self.retry_after = retry_after
        self.extra = extra
