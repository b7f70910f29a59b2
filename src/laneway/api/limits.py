"""A bound on the size of a request's head, the same under every server.

uvicorn and hypercorn bound a request head differently (one took a 70 KB
header, the other answered 431 at 16 KB), so laneway applies its own bound
before routing, and both servers are configured to let a head of that size
through to it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from laneway.api.errors import refuse
from laneway.api.exceptions import ApiError

# What each header line costs on the wire beyond its name and value: ": " and CRLF.
_LINE_OVERHEAD = 4


def head_size(scope: Scope) -> int:
    """The bytes of the request line and headers, as near as ASGI shows them."""
    size = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"])
    return size + sum(len(name) + len(value) + _LINE_OVERHEAD for name, value in scope["headers"])


def server_head_limit(max_header_bytes: int) -> int:
    """The head size to configure the server with: room well above laneway's own
    bound, so that a head over it reaches laneway and gets laneway's answer.
    Only a head beyond this gets the server's own (hypercorn: a bare 431)."""
    return max(8 * max_header_bytes, 256 * 1024)


class HeadLimitMiddleware:
    """Answers 431 to a request (or WebSocket handshake) whose head exceeds ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and head_size(scope) > self.max_bytes:
            message = f"request line and headers are over the limit of {self.max_bytes} bytes"
            await refuse(scope, receive, send, ApiError(431, message))
            return
        await self.app(scope, receive, send)
