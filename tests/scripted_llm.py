"""A scripted OpenAI-compatible chat-completions server, for the failure paths a
real model cannot be made to show on demand.

It speaks the real wire format (``POST /v1/chat/completions`` streamed as
``chat.completion.chunk`` frames, errors as ``{"error": {...}}`` with their
status and headers), serves from a uvicorn thread on a free loopback port, and
plays one :class:`Reply` per request, in order. It records every request body,
and when each stream's client went away.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.serverproc import free_port

START_GUARD_S = 10.0


@dataclass
class Reply:
    """One answer. ``text`` is streamed in ``pieces`` parts; ``tool_calls`` are
    (name, raw arguments text) pairs, streamed in two argument fragments each.
    ``status`` other than 200 answers with an error body instead; ``stall_after``
    sends that many chunks and then nothing, forever; ``cut_after`` sends that
    many chunks and then drops the connection mid-stream."""

    text: str = ""
    pieces: int = 3
    tool_calls: list[tuple[str, str]] = field(default_factory=list)
    usage: tuple[int, int] = (10, 5)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error_message: str = "scripted failure"
    stall_after: int | None = None
    cut_after: int | None = None
    chunk_delay_s: float = 0.0
    # Sent as every tool call's index (None: left out), as some servers do,
    # instead of each call's own.
    call_index: int | str | None = "own"


class _Cut(Exception):
    """Raised inside a stream to make uvicorn drop the connection mid-body."""


class ScriptedLLM:
    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        # Monotonic times at which a streaming client went away before the end.
        self.disconnects: list[float] = []
        self.stream_started = threading.Event()
        self.base_url = ""
        self._lock = threading.Lock()

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(body)
            return self.replies.pop(0) if self.replies else Reply(text="(no script left)")

    async def _completions(self, request: Request) -> Response:
        body = await request.json()
        self.authorizations.append(request.headers.get("authorization"))
        reply = self._next(body)
        if reply.status != 200:
            error = {"message": reply.error_message, "type": "scripted", "code": reply.status}
            return JSONResponse({"error": error}, reply.status, headers=reply.headers)
        return StreamingResponse(self._stream(body, reply), media_type="text/event-stream")

    async def _stream(self, body: dict[str, Any], reply: Reply) -> AsyncIterator[bytes]:
        chunks = list(_chunks(body.get("model", "scripted"), reply))
        self.stream_started.set()
        ended = False
        try:
            for index, chunk in enumerate(chunks):
                if reply.stall_after is not None and index == reply.stall_after:
                    await anyio.sleep_forever()
                if reply.cut_after is not None and index == reply.cut_after:
                    raise _Cut
                if reply.chunk_delay_s:
                    await anyio.sleep(reply.chunk_delay_s)
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
            ended = True
        finally:
            if not ended:
                self.disconnects.append(time.monotonic())

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/v1/chat/completions", self._completions, methods=["POST"])]
        )


def _chunks(model: str, reply: Reply) -> Iterator[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0,
                "model": model, "choices": [choice]}  # fmt: skip

    yield chunk({"role": "assistant", "content": ""})
    if reply.text:
        step = max(1, -(-len(reply.text) // reply.pieces))
        for start in range(0, len(reply.text), step):
            yield chunk({"content": reply.text[start : start + step]})
    for own, (name, arguments) in enumerate(reply.tool_calls):
        at = {"index": own if reply.call_index == "own" else reply.call_index}
        if at["index"] is None:
            at = {}
        call = {**at, "id": f"call_{own}", "type": "function",
                "function": {"name": name, "arguments": ""}}  # fmt: skip
        yield chunk({"tool_calls": [call]})
        half = len(arguments) // 2
        for part in (arguments[:half], arguments[half:]):
            yield chunk({"tool_calls": [{**at, "function": {"arguments": part}}]})
    yield chunk({}, "tool_calls" if reply.tool_calls else "stop")
    prompt, completion = reply.usage
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion}  # fmt: skip
    yield {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0,
           "model": model, "choices": [], "usage": usage}  # fmt: skip


@contextmanager
def scripted_llm() -> Iterator[ScriptedLLM]:
    """A running scripted server; stopped when the block ends, however it ends."""
    llm = ScriptedLLM()
    port = free_port()
    config = uvicorn.Config(
        llm.app(), host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_GUARD_S
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("scripted LLM server did not start")
            time.sleep(0.01)
        llm.base_url = f"http://127.0.0.1:{port}/v1"
        yield llm
    finally:
        server.should_exit = True
        thread.join(START_GUARD_S)
