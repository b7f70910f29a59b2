"""A minimal HTTP/1.1 keep-alive client over asyncio streams, stdlib only.

httpx spends 1-2 ms of client CPU per request, as much as the server's cheap
routes take to answer, so probes timed through it and a load generator built
on it would largely measure httpx. This client handles exactly what laneway
answers: a status line, headers and a Content-Length body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

HOST = "127.0.0.1"
_HEADER_END = b"\r\n\r\n"
# uvicorn and hypercorn close a keep-alive connection idle for 5 s; one idle for
# less than this is surely still open when reused.
MAX_IDLE_S = 2.0


class HttpError(Exception):
    """A response this client cannot read, or a pool with no connection left."""


class RawConnection:
    """One keep-alive connection; requests on it go one after another."""

    def __init__(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.port = port
        self._reader = reader
        self._writer = writer
        self.idle_since = time.monotonic()
        # Set when the server said it closes the connection after this answer
        # (hypercorn does after 1000 requests on one connection).
        self.closing = False

    @classmethod
    async def connect(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(port, reader, writer)

    async def close(self) -> None:
        self._writer.close()
        with suppress(OSError):
            await self._writer.wait_closed()

    async def request(self, method: str, path: str, body: bytes | None = None) -> int:
        """Send one request and read its whole answer; return the status code."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self._writer.write(head.encode() + b"\r\n" + (body or b""))
        raw = await self._reader.readuntil(_HEADER_END)
        status_line, *headers = raw[: -len(_HEADER_END)].split(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        for header in headers:
            name, _, value = header.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                self.closing = True
            elif name == b"transfer-encoding":
                raise HttpError(f"{method} {path}: transfer-encoding is not supported")
        if length:
            await self._reader.readexactly(length)
        return status


class ConnectionPool:
    """Idle connections are reused; a request finding none idle opens a new one,
    so requests never wait for each other on the client side."""

    def __init__(self, port: int, max_connections: int) -> None:
        self.port = port
        self.max_connections = max_connections
        self._idle: list[RawConnection] = []
        self._open = 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[RawConnection]:
        conn = await self._reuse()
        if conn is None:
            if self._open >= self.max_connections:
                raise HttpError(f"all {self.max_connections} connections are busy")
            self._open += 1
            try:
                conn = await RawConnection.connect(self.port)
            except BaseException:
                self._open -= 1
                raise
        reusable = False
        try:
            yield conn
            reusable = True
        finally:
            # A request that failed or was cancelled leaves the stream in an unknown state.
            if reusable and not conn.closing:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                self._open -= 1
                await conn.close()

    async def _reuse(self) -> RawConnection | None:
        """The most recently used idle connection that the server has not closed."""
        while self._idle:
            conn = self._idle.pop()
            if time.monotonic() - conn.idle_since < MAX_IDLE_S:
                return conn
            self._open -= 1
            await conn.close()
        return None

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
