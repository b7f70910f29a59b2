"""API-key authentication as plain ASGI middleware, for HTTP and WebSocket alike."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from laneway.api.errors import refuse
from laneway.api.exceptions import ApiError


class ApiKeyMiddleware:
    """Requires ``X-Session-API-Key: <key>`` or ``Authorization: Bearer <key>`` on
    /api (streams included) and, if configured, on /metrics. No keys: no checks."""

    def __init__(self, app: ASGIApp, keys: Sequence[str], *, protect_metrics: bool) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]
        self.protect_metrics = protect_metrics

    def _protected(self, path: str) -> bool:
        if path == "/api" or path.startswith("/api/"):
            return True
        return self.protect_metrics and path == "/metrics"

    def _valid(self, scope: Scope) -> bool:
        offered: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"x-session-api-key":
                offered.append(value.strip())
            elif name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    offered.append(token.strip())
        # Either header may carry the key. Every offer is compared with every
        # key, so the time taken says nothing about which key, or how much of
        # one, matched.
        matched = False
        for candidate in offered:
            for key in self.keys:
                matched |= bool(candidate) and hmac.compare_digest(candidate, key)
        return matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] not in ("http", "websocket")
            or not self.keys
            or not self._protected(scope["path"])
            or self._valid(scope)
        ):
            await self.app(scope, receive, send)
            return
        await refuse(
            scope,
            receive,
            send,
            ApiError(401, "missing or wrong API key: send X-Session-API-Key or a Bearer token"),
        )
