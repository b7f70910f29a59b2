"""Cross-instance stream latency: from ``POST .../messages`` (``run=false``) on
instance A to the SSE frame of that message on a stream of instance B, and,
for the same appends, on a stream of A itself, for comparison.

One append at a time, each with a marker as its text, found in the raw bytes
of both streams. A frame that does not come within ``FRAME_TIMEOUT_S`` ends
the measurement: its figures are then NaN, with a note, rather than a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from benchmarks.cluster.shared import C, instance
from benchmarks.figures import Figure
from benchmarks.httpraw import HOST, RawConnection
from benchmarks.server import Server, running_servers
from benchmarks.stats import percentile

if TYPE_CHECKING:
    from tests.pgserver import PostgresServer

# What a follower on another instance notices as lag; see StreamLatency.figures.
TARGET_MS = 50.0
ROUNDS = 300
QUICK_ROUNDS = 60
# Not counted: connections and the io lanes' threads being made.
WARMUP = 5
FRAME_TIMEOUT_S = 2.0
# After one append's frames, before the next append, so that no two share a frame.
GAP_S = 0.02
MARKER_PREFIX = "xmark-"
MARKER_DIGITS = 6


def planned_s(quick: bool) -> float:
    # A few milliseconds an append, beside the gap.
    return (QUICK_ROUNDS if quick else ROUNDS) * (GAP_S + 0.01)


def marker(index: int) -> str:
    return f"{MARKER_PREFIX}{index:0{MARKER_DIGITS}d}"


class MarkerScanner:
    """Finds the markers of :func:`marker` in a byte stream read in pieces of
    any size: each once, including one split between two pieces."""

    _PATTERN = re.compile(re.escape(MARKER_PREFIX.encode()) + rb"(\d{%d})" % MARKER_DIGITS)
    _LENGTH = len(MARKER_PREFIX) + MARKER_DIGITS

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> list[int]:
        text = self._tail + data
        # Shorter than a marker, so a marker found in it next time must end in
        # the new bytes: none is found twice.
        self._tail = text[-(self._LENGTH - 1) :]
        return [int(m.group(1)) for m in self._PATTERN.finditer(text)]


class _Follower:
    """A raw SSE stream of one conversation, which resolves the future waiting
    for each marker as the bytes holding it arrive."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._scanner = MarkerScanner()
        self._waiting: dict[int, asyncio.Future[float]] = {}
        # Set by the first event's frame: the stream has read what the
        # conversation held, and what comes next comes live.
        self.live = asyncio.Event()

    @classmethod
    async def open(cls, port: int, cid: str) -> _Follower:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(
            f"GET {C}/{cid}/events/stream HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), FRAME_TIMEOUT_S)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"stream refused on port {port}: {head[:60]!r}")
        return cls(reader, writer)

    def expect(self, index: int) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[index] = future
        return future

    async def pump(self) -> None:
        while data := await self._reader.read(1 << 16):
            now = time.perf_counter()
            if b"data: " in data:
                self.live.set()
            for index in self._scanner.feed(data):
                future = self._waiting.pop(index, None)
                if future is not None and not future.done():
                    future.set_result(now)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


@dataclass
class StreamLatency:
    rounds: int
    # Seconds from an append's request to its frame, on B and on A itself.
    cross: list[float] = field(default_factory=list)
    same: list[float] = field(default_factory=list)
    # The append (0-based, warm-up included) whose frame on B never came.
    timed_out_at: int | None = None

    def figures(self) -> list[Figure]:
        cross = [s * 1000 for s in self.cross]
        same = [s * 1000 for s in self.same]
        if self.timed_out_at is not None:
            p50 = p99 = math.nan
            note50 = note99 = (
                f"no frame on B within {FRAME_TIMEOUT_S:g} s of append {self.timed_out_at + 1} "
                f"on A ({len(cross)} measured before it): B's relay (A's NOTIFY, read "
                "from the store, published to B's followers) delivered nothing"
            )
        else:
            p50, p99 = percentile(cross, 0.5), percentile(cross, 0.99)
            note50 = f"max {max(cross):.1f} ms, {len(cross)} appends"
            note99 = (
                f"the same appends on A's own stream: p50 {percentile(same, 0.5):.2f}, p99 "
                f"{percentile(same, 0.99):.2f} ms; target: lag a client following on another "
                "instance does not notice, and well under a step's LLM call"
            )
        return [
            Figure("append on instance A to SSE frame on instance B, p50", p50, "ms", note=note50),
            Figure(
                "append on instance A to SSE frame on instance B, p99",
                p99,
                "ms",
                TARGET_MS,
                "lower",
                note=note99,
            ),
        ]

    def describe(self) -> str:
        return (
            f"{self.rounds} appends (a message, run=false) on A, one at a time, each followed on "
            "A's own SSE stream and on B's; both instances otherwise idle"
        )

    def details(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "cross_ms": [s * 1000 for s in self.cross],
            "same_ms": [s * 1000 for s in self.same],
            "timed_out_at": self.timed_out_at,
        }


def measure(pg: PostgresServer, quick: bool, note: Callable[[str], None]) -> StreamLatency:
    url = pg.new_database()
    rounds = QUICK_ROUNDS if quick else ROUNDS
    note("stream: starting instances A and B")
    with running_servers([instance(url), instance(url)]) as (a, b):
        response = httpx.post(
            a.base_url + C, json={"agent": {"kind": "sim"}, "run": False}, timeout=30.0
        )
        response.raise_for_status()
        note(f"stream: {rounds} appends on A, followed on A and on B")
        return asyncio.run(follow_appends(a, b, response.json()["id"], rounds))


async def follow_appends(a: Server, b: Server, cid: str, rounds: int) -> StreamLatency:
    """Append to ``cid`` on ``a``, followed on ``a`` and on ``b``."""
    found = StreamLatency(rounds)
    on_a = await _Follower.open(a.port, cid)
    on_b = await _Follower.open(b.port, cid)
    poster = await RawConnection.connect(a.port)
    try:
        async with asyncio.TaskGroup() as tg:
            pumps = [tg.create_task(on_a.pump()), tg.create_task(on_b.pump())]
            try:
                # Else the first appends may reach B in what its stream reads
                # of the conversation as it opens, rather than live.
                async with asyncio.timeout(FRAME_TIMEOUT_S):
                    await on_a.live.wait()
                    await on_b.live.wait()
                await _appends(poster, cid, on_a, on_b, found)
            finally:
                for pump in pumps:
                    pump.cancel()
    finally:
        await poster.close()
        await on_a.close()
        await on_b.close()
    return found


async def _appends(
    poster: RawConnection, cid: str, on_a: _Follower, on_b: _Follower, found: StreamLatency
) -> None:
    path = f"{C}/{cid}/messages"
    for index in range(WARMUP + found.rounds):
        same, cross = on_a.expect(index), on_b.expect(index)
        body = json.dumps({"content": marker(index), "run": False}).encode()
        sent = time.perf_counter()
        status = await poster.request("POST", path, body)
        if status != 202:
            raise RuntimeError(f"a message on A answered {status}")
        await asyncio.wait({same, cross}, timeout=FRAME_TIMEOUT_S)
        if not same.done():
            raise RuntimeError(f"no frame on A's own stream within {FRAME_TIMEOUT_S:g} s")
        if not cross.done():
            found.timed_out_at = index
            return
        if index >= WARMUP:
            found.same.append(same.result() - sent)
            found.cross.append(cross.result() - sent)
        await asyncio.sleep(GAP_S)
