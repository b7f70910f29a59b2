"""Event routes: search, count, one event, and live streams over SSE and WebSocket."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from anyio.abc import ObjectSendStream
from msgspec import UnsetType
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from laneway.api.encoding import convert, decode_query, encode, given, json_response
from laneway.api.errors import to_api_error
from laneway.api.exceptions import ApiError
from laneway.api.routing import service_of
from laneway.api.schemas import (
    MAX_SEQ,
    Count,
    EventCountQuery,
    EventPage,
    EventQuery,
    StreamQuery,
)
from laneway.api.timestamps import to_stored
from laneway.models import Event, EventFilter
from laneway.service import ConversationService

# A comment line this often keeps proxies from closing a quiet stream and lets
# the server notice a client that has gone away.
HEARTBEAT_S = 15.0
# Close codes: 1008 policy violation (bad input), 4404 conversation not found.
WS_BAD_INPUT = 1008
WS_NOT_FOUND = 4404
WS_TRY_AGAIN = 1013


def _filter(query: EventCountQuery) -> EventFilter:
    return EventFilter(
        kind=given(query.kind),
        source=given(query.source),
        text=given(query.text),
        after_seq=given(query.after_seq),
        before_seq=given(query.before_seq),
        since=_stamp("since", query.since),
        until=_stamp("until", query.until),
    )


def _stamp(name: str, value: str | UnsetType) -> str | None:
    text = given(value)
    return None if text is None else to_stored(name, text)


async def search_events(request: Request) -> Response:
    query = decode_query(request, EventQuery)
    items, next_cursor = await service_of(request).search_events(
        request.path_params["id"],
        _filter(query),
        order=query.order,
        limit=query.limit,
        cursor=given(query.cursor),
    )
    return json_response(EventPage(items, next_cursor))


async def count_events(request: Request) -> Response:
    query = decode_query(request, EventCountQuery)
    count = await service_of(request).count_events(request.path_params["id"], _filter(query))
    return json_response(Count(count))


async def get_event(request: Request) -> Response:
    seq: int = request.path_params["seq"]
    if seq > MAX_SEQ:
        raise ApiError(404, f"no event {seq}: seqs are below 2**63")
    return json_response(await service_of(request).get_event(request.path_params["id"], seq))


def _resume_point(request: Request) -> int:
    """``Last-Event-ID`` (an SSE reconnect) wins over ``?after_seq=``."""
    last_id = request.headers.get("last-event-id")
    if last_id is not None and last_id.strip():
        return convert({"after_seq": last_id.strip()}, StreamQuery, strict=False).after_seq
    return decode_query(request, StreamQuery).after_seq


async def _pump(
    service: ConversationService, cid: str, after_seq: int, send: ObjectSendStream[Event]
) -> None:
    async with send:
        async for event in service.subscribe(cid, after_seq):
            await send.send(event)


async def stream_events_sse(request: Request) -> Response:
    service = service_of(request)
    cid = request.path_params["id"]
    after_seq = _resume_point(request)
    await service.get(cid)  # a 404 must come before the stream's headers

    async def body() -> AsyncIterator[bytes]:
        yield b": laneway event stream\n\n"
        send, receive = anyio.create_memory_object_stream[Event](16)
        async with anyio.create_task_group() as tg, receive:
            tg.start_soon(_pump, service, cid, after_seq, send)
            while True:
                with anyio.move_on_after(HEARTBEAT_S) as idle:
                    try:
                        event = await receive.receive()
                    except anyio.EndOfStream:
                        return
                if idle.cancelled_caught:
                    yield b": keepalive\n\n"
                    continue
                yield b"id: %d\ndata: %s\n\n" % (event.seq, encode(event))

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def stream_events_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    cid = websocket.path_params["id"]
    try:
        service = service_of(websocket)
        after_seq = decode_query(websocket, StreamQuery).after_seq
        await service.get(cid)
    except Exception as exc:
        err = to_api_error(exc)
        if err is None:
            raise
        code = {404: WS_NOT_FOUND, 503: WS_TRY_AGAIN}.get(err.status, WS_BAD_INPUT)
        await websocket.close(code, err.message[:120])
        return

    async def watch_disconnect() -> None:
        try:
            while True:
                await websocket.receive_text()
        except (WebSocketDisconnect, RuntimeError, KeyError):
            pass
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_disconnect)
        try:
            async for event in service.subscribe(cid, after_seq):
                await websocket.send_text(encode(event).decode())
        except WebSocketDisconnect:
            pass
        else:
            # Deleted, or the server is closing.
            await websocket.close(1001)
        tg.cancel_scope.cancel()
