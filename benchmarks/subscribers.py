"""``python -m benchmarks.subscribers``: many SSE subscribers of one conversation,
in a process of their own so that their CPU is not the server's.

Each is a raw socket asking for the stream; one epoll loop reads them all and
keeps every byte until each has seen the ``finished`` status. Only then are the
bytes parsed, so that reading costs the client as little as it can: on a small
machine the client competes with the server for the same cores. It prints
"connected" on stdout once every stream has its headers, then, at the end, one
JSON line: for each subscriber the seqs it got, in order, and when (on the
monotonic clock) it saw the end.
"""

from __future__ import annotations

import argparse
import json
import re
import selectors
import socket
import sys
import time

from benchmarks.httpraw import HOST

_HEADER_END = b"\r\n\r\n"
_END = b'"status":"finished"'
_ID = re.compile(rb"^id: (\d+)$", re.MULTILINE)
GUARD_S = 120.0
RECV_BYTES = 1 << 18


class _Stream:
    __slots__ = ("chunks", "ended", "headers_done", "sock", "tail")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.chunks: list[bytes] = []
        self.tail = b""
        self.headers_done = False
        self.ended = 0.0

    def feed(self, data: bytes) -> bool:
        """Keep ``data``; True once the stream has shown the end of the run."""
        self.chunks.append(data)
        if not self.headers_done:
            head = b"".join(self.chunks)
            if _HEADER_END not in head:
                return False
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"stream refused: {head[:80]!r}")
            self.headers_done = True
        if _END in self.tail + data:
            self.ended = time.monotonic()
            return True
        self.tail = data[-len(_END) :]
        return False

    def seqs(self) -> list[int]:
        # Chunked transfer encoding puts size lines between the bytes; an id line
        # is whole within a chunk, because each event is sent in one piece.
        return [int(m) for m in _ID.findall(b"".join(self.chunks))]


def run(port: int, path: str, count: int) -> None:
    selector = selectors.EpollSelector()
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    streams = []
    for _ in range(count):
        sock = socket.create_connection((HOST, port))
        sock.sendall(request)
        sock.setblocking(False)
        stream = _Stream(sock)
        streams.append(stream)
        selector.register(sock, selectors.EVENT_READ, stream)
    deadline = time.monotonic() + GUARD_S
    connected = False
    open_streams = count
    while open_streams:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{open_streams} of {count} streams did not see the run end")
        for key, _ in selector.select(1.0):
            stream = key.data
            data = stream.sock.recv(RECV_BYTES)
            if not data:
                raise RuntimeError("the server closed a stream before the run finished")
            if stream.feed(data):
                selector.unregister(stream.sock)
                stream.sock.close()
                open_streams -= 1
        if not connected and all(s.headers_done for s in streams):
            connected = True
            print("connected", flush=True)
    print(json.dumps({"seqs": [s.seqs() for s in streams], "ended": [s.ended for s in streams]}))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.subscribers")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    run(args.port, args.path, args.count)


if __name__ == "__main__":
    sys.exit(main())
