"""Live event streams: Server-Sent Events, and a WebSocket on the same path.

A stream is one task sending what its follower yields, whole batches at a
time, using the frames the broker encoded once for all subscribers; and one
task that watches the client, so that a client going away ends the stream at
once and a quiet stream still gets its keepalive.
"""

from __future__ import annotations

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from laneway.api.encoding import convert, decode_query
from laneway.api.errors import to_api_error
from laneway.api.routing import service_of
from laneway.api.schemas import StreamQuery
from laneway.errors import NotFound
from laneway.service import ConversationService
from laneway.subscriptions import Follower

# A comment line this often keeps proxies from closing a quiet stream and lets
# the server notice a client that has gone away.
HEARTBEAT_S = 15.0
OPENING = b": laneway event stream\n\n"
KEEPALIVE = b": keepalive\n\n"
# Close codes: 1001 going away (deleted, or the server is stopping), 1003
# unsupported data (a binary frame), 1008 policy violation (bad input), 1013
# try again later, 4404 conversation not found.
WS_GOING_AWAY = 1001
WS_UNSUPPORTED = 1003
WS_BAD_INPUT = 1008
WS_TRY_AGAIN = 1013
WS_NOT_FOUND = 4404


class SSEResponse(Response):
    """A response of Server-Sent Events, sent by the subclass's ``__call__``:
    :meth:`start`, then the frames, until the stream ends."""

    media_type = "text/event-stream"

    def __init__(self) -> None:
        self.status_code = 200
        self.background = None
        # No cache may keep a live stream, and no proxy may buffer it.
        self.init_headers({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def start(self, scope: Scope, send: Send) -> None:
        headers = self.raw_headers
        if scope.get("http_version") == "1.1":
            # A stream ends only when the client goes, its conversation is
            # deleted or the server stops, and a client follows again on a new
            # connection. Kept open instead, the connection kept hypercorn from
            # exiting until its graceful timeout. (HTTP/2 has no such header.)
            headers = [*headers, (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})


def _resume_point(request: Request, query: StreamQuery) -> int:
    """``Last-Event-ID`` (an SSE reconnect) wins over ``?after_seq=``."""
    last_id = request.headers.get("last-event-id")
    if last_id is not None and last_id.strip():
        return convert({"after_seq": last_id.strip()}, StreamQuery, strict=False).after_seq
    return query.after_seq


async def stream_events_sse(request: Request) -> Response:
    service = service_of(request)
    cid = request.path_params["id"]
    query = decode_query(request, StreamQuery)
    after_seq = _resume_point(request, query)
    await service.get(cid)  # a 404 must come before the stream's headers
    return EventStreamResponse(service, cid, after_seq, deltas=query.deltas == "true")


class EventStreamResponse(SSEResponse):
    """A Server-Sent Events stream of one conversation; ``id:`` is the seq, and
    deltas, if asked for, are ``event: delta`` frames with no ``id:``."""

    def __init__(
        self, service: ConversationService, conversation_id: str, after_seq: int, *, deltas: bool
    ) -> None:
        self.service = service
        self.conversation_id = conversation_id
        self.after_seq = after_seq
        self.deltas = deltas
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.start(scope, send)
        await send({"type": "http.response.body", "body": OPENING, "more_body": True})
        follow = self.service.follow(self.conversation_id, self.after_seq, deltas=self.deltas)
        async with follow as follower, anyio.create_task_group() as tg:
            tg.start_soon(_watch_http_client, receive, follower, tg.cancel_scope)
            try:
                async for frames in follower:
                    body = b"".join([frame.sse for frame in frames]) if frames else KEEPALIVE
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            except (NotFound, OSError):
                pass  # deleted since the lookup, or the client has gone
            # Ended by a delete or by shutdown: the response is complete.
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            tg.cancel_scope.cancel()


async def _watch_http_client(
    receive: Receive, follower: Follower, stream: anyio.CancelScope
) -> None:
    while True:
        with anyio.move_on_after(HEARTBEAT_S) as quiet:
            message = await receive()
        if quiet.cancelled_caught:
            follower.poke()
        elif message["type"] == "http.disconnect":
            stream.cancel()
            return


async def stream_events_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    cid = websocket.path_params["id"]
    try:
        service = service_of(websocket)
        query = decode_query(websocket, StreamQuery)
        await service.get(cid)
    except Exception as exc:
        err = to_api_error(exc)
        if err is None:
            raise
        code = {404: WS_NOT_FOUND, 503: WS_TRY_AGAIN}.get(err.status, WS_BAD_INPUT)
        await websocket.close(code, err.message[:120])
        return
    follow = service.follow(cid, query.after_seq, deltas=query.deltas == "true")
    async with follow as follower, anyio.create_task_group() as tg:
        tg.start_soon(_watch_ws_client, websocket, tg.cancel_scope)
        try:
            async for frames in follower:
                for frame in frames:
                    message: Message = {"type": "websocket.send", "text": frame.text}
                    await websocket.send(message)
        except (WebSocketDisconnect, OSError):
            pass
        except NotFound:
            await websocket.close(WS_GOING_AWAY)
        else:
            await websocket.close(WS_GOING_AWAY)
        tg.cancel_scope.cancel()


async def _watch_ws_client(websocket: WebSocket, stream: anyio.CancelScope) -> None:
    """Text frames from the client mean nothing here and are ignored. A binary
    frame is refused with 1003 under every server: uvicorn would otherwise drop
    the connection, and hypercorn ignore it."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            break
        if message.get("bytes") is not None:
            stream.cancel()
            with anyio.CancelScope(shield=True):
                await websocket.close(WS_UNSUPPORTED, "binary frames are not accepted")
            return
    stream.cancel()
