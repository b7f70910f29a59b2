"""Event search p99 (kind=message, limit 50) on a conversation of 100,000 events
in a database of 1,000,000.

The database is built once, in bulk, and cached under benchmarks/.cache/. The
store opens it first so that its own schema (tables and indexes) is what gets
filled; rows then go in through one connection in large transactions, which is
far faster than the store's one-transaction-per-append path and makes the same
b-trees. Queries run in-process through ``SQLiteEventStore.search_events``, and
then over HTTP against a server started on the same file.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import msgspec

from benchmarks.figures import ComponentResult, Figure
from benchmarks.server import ServerOptions, running_server
from benchmarks.stats import Summary
from laneway.models import EventFilter
from laneway.store import SQLiteEventStore
from laneway.store._sqlite_schema import MIGRATIONS

CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache"
TARGET_P99_MS = 20.0
LIMIT = 50
BATCH_ROWS = 100_000
OTHER_CONVERSATION_EVENTS = 1_000
# The layout of one step, as the runner writes it with two tool calls.
_STEP_KINDS = (
    ("message", "agent"),
    ("tool_call", "agent"),
    ("tool_call", "agent"),
    ("tool_result", "tool"),
    ("tool_result", "tool"),
)
_BASE_TIME = datetime(2025, 1, 1, tzinfo=UTC)
_INSERT_EVENT = (
    "INSERT INTO events (conversation_id, seq, id, timestamp, kind, source, data, text_cf)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_CONVERSATION = (
    "INSERT INTO conversations (id, title, status, agent, max_steps, created_at, updated_at,"
    " steps_done, last_seq) VALUES (?, '', 'finished', ?, 100000, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class SearchSize:
    total_events: int
    target_events: int
    queries: int
    http_queries: int

    @property
    def path(self) -> Path:
        # The schema version in the name: a cache built for other indexes is rebuilt.
        version = len(MIGRATIONS)
        return CACHE_DIR / f"search-v{version}-{self.total_events}-{self.target_events}.db"


FULL = SearchSize(1_000_000, 100_000, queries=3_000, http_queries=400)
QUICK = SearchSize(100_000, 10_000, queries=1_000, http_queries=200)
TARGET_ID = "target"


@cache
def _stamp(second: int) -> str:
    return (_BASE_TIME + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S")


def _rows(cid: str, count: int) -> Iterator[tuple[Any, ...]]:
    """A conversation's events: created, the user's message, then steps."""
    encode = msgspec.json.encode
    for seq in range(1, count + 1):
        micros = seq * 1000  # one event a millisecond
        stamp = f"{_stamp(micros // 1_000_000)}.{micros % 1_000_000:06d}Z"
        eid = f"{cid}-{seq}"
        if seq == 1:
            yield cid, seq, eid, stamp, "status", "system", '{"status":"idle"}', None
            continue
        if seq == 2:
            yield cid, seq, eid, stamp, "message", "user", '{"text":"go"}', "go"
            continue
        step, slot = divmod(seq - 3, len(_STEP_KINDS))
        kind, source = _STEP_KINDS[slot]
        if kind == "message":
            text = f"step {step + 1}: looked at the results"
            yield cid, seq, eid, stamp, kind, source, encode({"text": text}).decode(), text
        else:
            data = {"call_id": f"s{step}t{slot}", "name": "sleep", "arguments": {"ms": 20}}
            yield cid, seq, eid, stamp, kind, source, encode(data).decode(), None


def _build(size: SearchSize) -> None:
    path = size.path
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    SQLiteEventStore(str(path)).close()
    conversations = [(TARGET_ID, size.target_events)]
    others = (size.total_events - size.target_events) // OTHER_CONVERSATION_EVENTS
    conversations += [(f"other{i:05d}", OTHER_CONVERSATION_EVENTS) for i in range(others)]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # Safe for a cache: a crash mid-build leaves no marker, so it is rebuilt.
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -262144")
        agent = '{"kind":"sim","config":{}}'
        batch: list[tuple[Any, ...]] = []
        conn.execute("BEGIN")
        for cid, count in conversations:
            stamp = _stamp(0) + ".000000Z"
            conn.execute(_INSERT_CONVERSATION, (cid, agent, stamp, stamp, count // 5, count))
            for row in _rows(cid, count):
                batch.append(row)
                if len(batch) >= BATCH_ROWS:
                    conn.executemany(_INSERT_EVENT, batch)
                    conn.execute("COMMIT")
                    conn.execute("BEGIN")
                    batch.clear()
        conn.executemany(_INSERT_EVENT, batch)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
    finally:
        conn.close()
    _marker(size).write_text(json.dumps({"events": events, "conversations": len(conversations)}))


def _marker(size: SearchSize) -> Path:
    return size.path.with_suffix(".ready")


def ensure_database_cached(size: SearchSize) -> bool:
    return size.path.exists() and _marker(size).exists()


def ensure_database(size: SearchSize) -> tuple[Path, float]:
    """The cached database, built first if missing; and the seconds spent building."""
    if ensure_database_cached(size):
        return size.path, 0.0
    started = time.perf_counter()
    _build(size)
    return size.path, time.perf_counter() - started


class _Queries:
    """Searches as a client paging through a long conversation makes them: half
    jump to a random seq, half follow the cursor of the page before."""

    def __init__(self, size: SearchSize) -> None:
        self._random = random.Random(1)
        self._size = size
        self._cursor: str | None = None

    def next(self) -> tuple[int | None, str | None]:
        if self._cursor is not None and self._random.random() < 0.5:
            return None, self._cursor
        return self._random.randrange(0, self._size.target_events), None

    def answered(self, cursor: str | None) -> None:
        self._cursor = cursor


def _in_process(path: Path, size: SearchSize) -> Summary:
    store = SQLiteEventStore(str(path))
    queries = _Queries(size)
    latencies: list[float] = []
    try:
        for _ in range(size.queries):
            after_seq, cursor = queries.next()
            flt = EventFilter(kind="message", after_seq=after_seq)
            started = time.perf_counter()
            _, next_cursor = store.search_events(
                TARGET_ID, flt, order="asc", limit=LIMIT, cursor=cursor
            )
            latencies.append((time.perf_counter() - started) * 1000)
            queries.answered(next_cursor)
    finally:
        store.close()
    return Summary.of(latencies)


def _over_http(path: Path, size: SearchSize) -> Summary:
    queries = _Queries(size)
    latencies: list[float] = []
    with (
        running_server(ServerOptions(db=path)) as server,
        httpx.Client(base_url=server.base_url, timeout=10.0) as client,
    ):
        url = f"/api/conversations/{TARGET_ID}/events"
        for _ in range(size.http_queries):
            after_seq, cursor = queries.next()
            params: dict[str, str | int] = {"kind": "message", "limit": LIMIT}
            if cursor is not None:
                params["cursor"] = cursor
            elif after_seq is not None:
                params["after_seq"] = after_seq
            started = time.perf_counter()
            response = client.get(url, params=params)
            latencies.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            queries.answered(response.json()["next_cursor"])
    return Summary.of(latencies)


def run(quick: bool) -> ComponentResult:
    size = QUICK if quick else FULL
    path, built_s = ensure_database(size)
    local = _in_process(path, size)
    http = _over_http(path, size)
    scale = f"{size.target_events:,} events in a database of {size.total_events:,}"
    if quick:
        scale += " (quick: the target is set for 100,000 in 1,000,000)"
    built = f"built in {built_s:.0f} s" if built_s else "cached"
    return ComponentResult(
        name="search",
        method=(
            f"kind=message, limit {LIMIT}, random seq or next cursor, on a conversation of "
            f"{scale}; database {built} at {path.name}"
        ),
        figures=[
            Figure(
                f"event search p99 in-process ({local.count} queries, p50 "
                f"{local.p50:.2f}, max {local.max:.2f} ms)",
                local.p99,
                "ms",
                TARGET_P99_MS,
                "lower",
            ),
            Figure(
                f"event search p99 over HTTP ({http.count} sequential requests, p50 "
                f"{http.p50:.2f}, max {http.max:.2f} ms)",
                http.p99,
                "ms",
                TARGET_P99_MS,
                "lower",
            ),
        ],
        details={
            "size": size.__dict__,
            "build_s": built_s,
            "in_process": local.__dict__,
            "http": http.__dict__,
        },
    )
