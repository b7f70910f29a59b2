"""The app in-process, behind httpx's ASGITransport, with its lifespan running;
and its event streams read as they are sent."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream
from starlette.applications import Starlette
from starlette.types import Message, Scope

from laneway.app import create_app
from laneway.config import Settings
from laneway.service import ConversationService
from tests import agents


@asynccontextmanager
async def api_client(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh app with an in-memory store; ``client.app`` is the app."""
    settings = Settings(db=":memory:", agents=agents.ALLOWED, **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def service(client: httpx.AsyncClient) -> ConversationService:
    app: Starlette = client.app  # type: ignore[attr-defined]
    svc: ConversationService = app.state.service
    return svc


class SSEStream:
    """A Server-Sent Events response of the app in-process, read as it is sent
    (httpx's ASGITransport would wait for the whole body, and a stream has no
    end): its frames, each as its fields by name (``id``, ``event``, ``data``)."""

    def __init__(self, chunks: MemoryObjectReceiveStream[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    async def frame(self) -> dict[str, str]:
        """The next frame, comments (keepalives) left out; EndOfStream once the
        response is over."""
        while True:
            block, sep, rest = self._buffer.partition(b"\n\n")
            if not sep:
                self._buffer += await self._chunks.receive()
                continue
            self._buffer = rest
            lines = block.decode().splitlines()
            fields = dict(line.split(": ", 1) for line in lines if not line.startswith(":"))
            if fields:
                return fields


@asynccontextmanager
async def sse_stream(
    client: httpx.AsyncClient, path: str, query: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[SSEStream]:
    """GET ``path`` from the app of ``client`` as an SSE stream; the client
    disconnects when the block ends."""
    app: Starlette = client.app  # type: ignore[attr-defined]
    chunks_in, chunks_out = anyio.create_memory_object_stream[bytes](math.inf)
    gone = anyio.Event()

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and message["body"]:
            await chunks_in.send(message["body"])

    raw_headers = [(b"host", b"127.0.0.1")]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }

    async def respond() -> None:
        # The response is over when the app returns: frame() then raises EndOfStream.
        async with chunks_in:
            await app(scope, receive, send)

    async with anyio.create_task_group() as tg, chunks_in, chunks_out:
        tg.start_soon(respond)
        try:
            yield SSEStream(chunks_out)
        finally:
            gone.set()
