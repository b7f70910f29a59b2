"""The lanes as Server-Sent Events: a snapshot at once, then one a second.

Each frame's data is what ``GET /api/lanes`` answers, so a page follows the
lanes without polling. The stream ends when the client goes or when the server
begins to stop (:meth:`ConversationService.drain`), so it holds up no shutdown.
"""

from __future__ import annotations

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from laneway.api.encoding import encode
from laneway.api.routing import service_of
from laneway.api.schemas import LanesView
from laneway.api.streams import SSEResponse
from laneway.service import ConversationService

SNAPSHOT_INTERVAL_S = 1.0


async def stream_lanes_sse(request: Request) -> Response:
    return LanesStreamResponse(service_of(request))


class LanesStreamResponse(SSEResponse):
    def __init__(self, service: ConversationService) -> None:
        self.service = service
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.start(scope, send)
        draining = self.service.draining
        async with anyio.create_task_group() as tg:
            tg.start_soon(_end_on_disconnect, receive, tg.cancel_scope)
            try:
                while not draining.is_set():
                    lanes = self.service.lanes
                    body = b"data: " + encode(LanesView(lanes.mode, lanes.snapshot())) + b"\n\n"
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    with anyio.move_on_after(SNAPSHOT_INTERVAL_S):
                        await draining.wait()
            except OSError:
                pass  # the client has gone
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            tg.cancel_scope.cancel()


async def _end_on_disconnect(receive: Receive, stream: anyio.CancelScope) -> None:
    """A snapshot a second keeps the stream from going quiet, so unlike an
    event stream this needs no keepalive: it only watches for the client going."""
    while (await receive())["type"] != "http.disconnect":
        pass
    stream.cancel()
