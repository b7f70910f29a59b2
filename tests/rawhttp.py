"""HTTP/1.1 over a plain socket, for what httpx hides: whether the server kept
the connection open after an answer, and requests httpx would not send."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

GUARD_S = 30.0


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """One keep-alive connection to a server on 127.0.0.1; use with ``with``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=GUARD_S)
        self._buffer = b""

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> RawResponse:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.sock.sendall("\r\n".join(lines).encode() + b"\r\n\r\n" + (body or b""))
        return self._read_response()

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self._buffer += data
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self._buffer += data
        body, self._buffer = self._buffer[:size], self._buffer[size:]
        return body

    def _read_response(self) -> RawResponse:
        status_line, *header_lines = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        return RawResponse(int(status_line.split()[1]), headers, self._read_exactly(length))

    def closed_by_server(self) -> bool:
        """Whether the server has closed its end (a read finds the end of stream)."""
        self.sock.settimeout(0.5)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(GUARD_S)
