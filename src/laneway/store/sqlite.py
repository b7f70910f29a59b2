"""The SQLite event store: one process, many threads.

All writes go through one connection under a lock, which also makes seqs
gap-free without retries. Reads of a file database use one connection per
thread, so they run alongside each other and alongside the writer (WAL).

Appends are combined: a thread queues its append, then takes the write lock,
and whoever holds the lock commits every queued append in one transaction; a
waiter that finds its append already committed leaves at once. With ten run
threads this measured ~5% above one commit per append; a dedicated writer
thread, and waking waiters in batches, measured below both.

What limits appends, as measured here: a runner-shaped commit writes a WAL
frame for each b-tree page it touches, so each secondary index costs every
append a page per conversation (hence one index for kind and source, and time
ranges found by bisecting seqs). Checkpoints run on a thread of their own (see
_sqlite_checkpoint); inside commits they took about a fifth of append time.
Most batches hold a single append (77% with ten run threads), and ten threads
append ~25% less than one thread writing for ten conversations in turn: what
they lose is handing over the write lock and the GIL.
Smaller pages (1-2 KB) and the GIL switch interval changed nothing; larger pages
(8-16 KB) were slower. Also measured without gain: a whole batch as one
autocommit statement (a multi-row INSERT into a view whose INSTEAD OF trigger
also updates the conversation; through json_each it was slower), a dedicated
writer thread waking each waiter on a lock of its own, and a leader thread
committing for the others while they wait on locks of their own.
"""

from __future__ import annotations

import fcntl
import functools
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import msgspec

from laneway.models import (
    ACTIVE_STATUSES,
    STATUSES,
    AgentSpec,
    ConversationRecord,
    ConversationUpdate,
    Event,
    EventFilter,
    EventKind,
    EventSource,
    NewEvent,
    Order,
    Status,
    utc_now,
)
from laneway.store._record_cache import RecordCache
from laneway.store._sqlite_checkpoint import Checkpointer
from laneway.store._sqlite_query import (
    EventCursor,
    PageCursor,
    decode_cursor,
    encode_cursor,
    event_where,
    search_sql,
    seq_window,
)
from laneway.store._sqlite_schema import connect, is_memory, migrate
from laneway.store.base import NotFound

# Columns in field order, so rows and records convert positionally.
_CONVERSATION_FIELDS = tuple(field.name for field in msgspec.structs.fields(ConversationRecord))
_CONVERSATION_COLUMNS = ", ".join(_CONVERSATION_FIELDS)
_INSERT_CONVERSATION = (
    f"INSERT INTO conversations ({_CONVERSATION_COLUMNS})"
    f" VALUES ({', '.join('?' * len(_CONVERSATION_FIELDS))})"
)
_EVENT_COLUMNS = "seq, id, timestamp, kind, source, data"
_INSERT_EVENT = (
    "INSERT INTO events (conversation_id, seq, id, timestamp, kind, source, data, text_cf)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_MAX_PK = 2**63 - 1
# Records kept in memory; a few MB, and more than the conversations a busy server
# touches between two reads of the same one.
RECORD_CACHE_SIZE = 4096
# Events committed between background checkpoints: ~1,500 WAL pages when ten runs
# append, against the 10,000 the writer would otherwise copy in one go. 200 and
# 2,000 measured the same.
CHECKPOINT_EVERY_EVENTS = 500

_encode = msgspec.json.encode
_decode_data = msgspec.json.Decoder(dict[str, Any]).decode
_decode_agent = msgspec.json.Decoder(AgentSpec).decode

# An event ready to insert but for its seq and timestamp, which need the lock.
_Prepared = tuple[str, EventKind, EventSource, str, str | None]
_ID_BYTES = 16


def _prepare(events: Sequence[NewEvent]) -> list[_Prepared]:
    # 128 random bits per id, as in a uuid4; one urandom call for the whole batch.
    ids = os.urandom(_ID_BYTES * len(events)).hex()
    prepared = []
    for index, event in enumerate(events):
        text = event.data.get("text") if event.kind == "message" else None
        text_cf = text.casefold() if isinstance(text, str) else None
        eid = ids[2 * _ID_BYTES * index : 2 * _ID_BYTES * (index + 1)]
        prepared.append((eid, event.kind, event.source, _encode(event.data).decode(), text_cf))
    return prepared


class _Append:
    """One queued append; the thread that commits it fills in the outcome."""

    __slots__ = ("conversation_id", "done", "error", "first_seq", "now", "prepared", "update")

    def __init__(
        self, conversation_id: str, prepared: list[_Prepared], update: ConversationUpdate | None
    ) -> None:
        self.conversation_id = conversation_id
        self.prepared = prepared
        self.update = update
        self.done = False
        self.error: BaseException | None = None
        self.first_seq = 0
        self.now = ""


def _insert_events(
    conn: sqlite3.Connection,
    conversation_id: str,
    first_seq: int,
    now: str,
    prepared: list[_Prepared],
) -> None:
    rows = [
        (conversation_id, seq, eid, now, kind, source, data, text_cf)
        for seq, (eid, kind, source, data, text_cf) in enumerate(prepared, first_seq)
    ]
    if len(rows) == 1:
        conn.execute(_INSERT_EVENT, rows[0])
    elif rows:
        conn.executemany(_INSERT_EVENT, rows)


def _stored(
    conversation_id: str, first_seq: int, now: str, prepared: list[_Prepared]
) -> list[Event]:
    # Decoding the stored JSON (not reusing the caller's dict) gives the caller
    # exactly what a later read returns, and no object it might mutate. Done
    # outside the write lock, which only the inserts need.
    return [
        Event(seq, eid, conversation_id, now, kind, source, _decode_data(data))
        for seq, (eid, kind, source, data, _) in enumerate(prepared, first_seq)
    ]


@functools.cache
def _update_sql(fields: tuple[str, ...]) -> str:
    # One statement per combination of updated fields, so sqlite3 caches each.
    # RETURNING reads last_seq in the same statement that advances it.
    sets = "".join(f", {name} = ?" for name in fields)
    return (
        f"UPDATE conversations SET last_seq = last_seq + ?, updated_at = ?{sets}"
        " WHERE id = ? RETURNING last_seq"
    )


def _record(row: tuple[Any, ...]) -> ConversationRecord:
    cid, title, status, agent, *rest = row
    return ConversationRecord(cid, title, status, _decode_agent(agent), *rest)


def _event(conversation_id: str, row: tuple[Any, ...]) -> Event:
    seq, eid, timestamp, kind, source, data = row
    return Event(seq, eid, conversation_id, timestamp, kind, source, _decode_data(data))


class DatabaseInUse(RuntimeError):
    """Another process has this database file open as a laneway store."""


def _claim(path: str) -> IO[bytes]:
    """Hold an exclusive lock on ``<path>.lock`` for as long as the store is open.

    The record cache and the timestamp floor are right only if this process
    makes every write, so a second laneway on the same file is refused at once
    rather than left to serve stale statuses.
    """
    lock = open(f"{path}.lock", "ab")  # noqa: SIM115 -- held until close()
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DatabaseInUse(f"{path} is in use by another laneway process") from None
    return lock


class SQLiteEventStore:
    """An :class:`~laneway.store.base.EventStore` in a SQLite file, or ``":memory:"``.

    One store per file: opening a file that another store (in any process)
    holds raises :class:`DatabaseInUse`.
    """

    def __init__(
        self,
        path: str,
        *,
        cached_records: int = RECORD_CACHE_SIZE,
        checkpoint_every: int = CHECKPOINT_EVERY_EVENTS,
    ) -> None:
        self.path = path
        self._records = RecordCache(cached_records)
        self._memory = is_memory(path)
        self._claim: IO[bytes] | None = None
        if not self._memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._claim = _claim(path)
        self._lock = threading.Lock()
        try:
            self._writer = connect(path, reader=False)
        except BaseException:
            self._release_claim()
            raise
        try:
            migrate(self._writer)
            self._checkpointer = None if self._memory else Checkpointer(path, checkpoint_every)
        except BaseException:
            self._writer.close()
            self._release_claim()
            raise
        # The newest stamp held: each conversation's last event, one primary-key
        # lookup per conversation.
        (self._last_stamp,) = self._writer.execute(
            "SELECT coalesce(max(e.timestamp), '') FROM conversations c CROSS JOIN events e"
            " WHERE e.conversation_id = c.id AND e.seq = c.last_seq"
        ).fetchone()
        self._queue: list[_Append] = []
        self._queue_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        self._readers_lock = threading.Lock()
        self._closed = False

    # -- connections ---------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        if self._memory:
            with self._lock:
                yield self._writer
            return
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open_reader()
        yield conn

    def _open_reader(self) -> sqlite3.Connection:
        conn = connect(self.path, reader=True)
        with self._readers_lock:
            if self._closed:
                conn.close()
                raise sqlite3.ProgrammingError("the store is closed")
            # Worker pools retire idle threads; close what those threads left behind.
            live = []
            for ref, other in self._readers:
                thread = ref()
                if thread is not None and thread.is_alive():
                    live.append((ref, other))
                else:
                    other.close()
            live.append((weakref.ref(threading.current_thread()), conn))
            self._readers = live
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.close()
        with self._readers_lock:
            self._closed = True
            readers, self._readers = self._readers, []
        for _, conn in readers:
            conn.close()
        with self._lock:
            self._writer.close()
        self._release_claim()

    def _release_claim(self) -> None:
        if self._claim is not None:
            self._claim.close()  # closing the file drops the lock
            self._claim = None

    # -- conversations -------------------------------------------------------

    def create_conversation(
        self, record: ConversationRecord, events: Sequence[NewEvent] = ()
    ) -> list[Event]:
        prepared = _prepare(events)
        row: list[Any] = list(msgspec.structs.astuple(record))
        row[_CONVERSATION_FIELDS.index("agent")] = _encode(record.agent).decode()
        row[_CONVERSATION_FIELDS.index("last_seq")] = len(prepared)
        with self._write() as conn:
            conn.execute(_INSERT_CONVERSATION, row)
            now = self._now()
            _insert_events(conn, record.id, 1, now, prepared)
        self._records.put(msgspec.structs.replace(record, last_seq=len(prepared)))
        return _stored(record.id, 1, now, prepared)

    def cached_conversation(self, conversation_id: str) -> ConversationRecord | None:
        return self._records.get(conversation_id)

    def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        cached = self._records.get(conversation_id)
        if cached is not None:
            return cached
        generation = self._records.generation
        sql = f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ?"
        with self._read() as conn:
            row = conn.execute(sql, (conversation_id,)).fetchone()
        if row is None:
            return None
        record = _record(row)
        self._records.fill(record, generation)
        return record

    def list_conversations(
        self, *, status: Status | None, limit: int, cursor: str | None
    ) -> tuple[list[ConversationRecord], str | None]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        before = _MAX_PK if cursor is None else decode_cursor(cursor, PageCursor).r
        where = "pk < ?" if status is None else "status = ? AND pk < ?"
        params = (before, limit + 1) if status is None else (status, before, limit + 1)
        sql = (
            f"SELECT {_CONVERSATION_COLUMNS}, pk FROM conversations WHERE {where} "
            "ORDER BY pk DESC LIMIT ?"
        )
        with self._read() as conn:
            rows = conn.execute(sql, params).fetchall()
        page = [_record(row[:-1]) for row in rows[:limit]]
        more = len(rows) > limit
        return page, encode_cursor(PageCursor(rows[limit - 1][-1])) if more else None

    def count_conversations(self, *, status: Status | None) -> int:
        with self._read() as conn:
            if status is None:
                row = conn.execute("SELECT count(*) FROM conversations").fetchone()
            else:
                sql = "SELECT count(*) FROM conversations WHERE status = ?"
                row = conn.execute(sql, (status,)).fetchone()
        return int(row[0])

    def count_by_status(self) -> dict[Status, int]:
        with self._read() as conn:
            rows = conn.execute("SELECT status, count(*) FROM conversations GROUP BY status")
            found = dict(rows.fetchall())
        return {status: found.get(status, 0) for status in STATUSES}

    def delete_conversation(self, conversation_id: str) -> bool:
        # The foreign key's ON DELETE CASCADE removes the events.
        with self._write() as conn:
            cur = conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        # After the commit: a reader whose snapshot predates it cannot cache it back.
        self._records.discard(conversation_id)
        return cur.rowcount > 0

    def recover_interrupted(self, reason: str) -> list[str]:
        active = sorted(ACTIVE_STATUSES)
        marks = ", ".join("?" * len(active))
        sql = f"SELECT id FROM conversations WHERE status IN ({marks}) ORDER BY pk"
        with self._write() as conn:
            ids: list[str] = [row[0] for row in conn.execute(sql, active).fetchall()]
            requests = self._pause_locked(conn, ids, reason)
        for request in requests:
            self._committed(request)
        return ids

    def mark_paused(self, conversation_ids: Sequence[str], reason: str) -> dict[str, list[Event]]:
        with self._write() as conn:
            requests = self._pause_locked(conn, conversation_ids, reason)
        stored = {}
        for request in requests:
            self._committed(request)
            stored[request.conversation_id] = _stored(
                request.conversation_id, request.first_seq, request.now, request.prepared
            )
        return stored

    def _pause_locked(
        self, conn: sqlite3.Connection, conversation_ids: Sequence[str], reason: str
    ) -> list[_Append]:
        """Append a paused status to each conversation that exists; the write lock
        and a transaction are held."""
        event = NewEvent("status", "system", {"status": "paused", "reason": reason})
        update = ConversationUpdate(status="paused")
        written = []
        for cid in conversation_ids:
            request = _Append(cid, _prepare([event]), update)
            try:
                self._append_locked(conn, request)
            except NotFound:
                continue
            written.append(request)
        return written

    # -- events --------------------------------------------------------------

    def append(
        self,
        conversation_id: str,
        events: Sequence[NewEvent],
        update: ConversationUpdate | None = None,
    ) -> list[Event]:
        # Ids and JSON are made before taking the lock, to keep it short.
        request = _Append(conversation_id, _prepare(events), update)
        with self._queue_lock:
            self._queue.append(request)
        with self._lock:
            if not request.done:
                self._commit_queued()
        if request.error is not None:
            raise request.error
        return _stored(conversation_id, request.first_seq, request.now, request.prepared)

    def _commit_queued(self) -> None:
        """Commit every queued append in one transaction; the write lock is held."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for request in batch:
                    try:
                        self._append_locked(conn, request)
                    except NotFound as exc:
                        # Nothing of it was written; the others commit as usual.
                        request.error = exc
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            written = 0
            for request in batch:
                if request.error is None:
                    self._committed(request)
                    written += len(request.prepared)
            # Read once: close() may clear it meanwhile, and a closed one ignores this.
            checkpointer = self._checkpointer
            if checkpointer is not None:
                checkpointer.wrote(written)
        except BaseException as exc:
            for request in batch:
                request.error = exc
            raise
        finally:
            for request in batch:
                request.done = True

    def _append_locked(self, conn: sqlite3.Connection, request: _Append) -> None:
        changes = request.update.changes() if request.update is not None else {}
        fields, values = tuple(changes), list(changes.values())
        now = self._now()
        count = len(request.prepared)
        params = (count, now, *values, request.conversation_id)
        row = conn.execute(_update_sql(fields), params).fetchone()
        if row is None:
            raise NotFound(f"no conversation {request.conversation_id!r}")
        request.first_seq = row[0] - count + 1
        request.now = now
        _insert_events(conn, request.conversation_id, request.first_seq, now, request.prepared)

    def _now(self) -> str:
        """The time to stamp a commit with; call under the write lock. Never earlier
        than a stamp already given, even if the clock steps back: time ranges are
        found by bisecting seqs (see seq_window), which needs stamps in seq order."""
        now = utc_now()
        if now < self._last_stamp:
            now = self._last_stamp
        self._last_stamp = now
        return now

    def _committed(self, request: _Append) -> None:
        last_seq = request.first_seq + len(request.prepared) - 1
        self._records.update(
            request.conversation_id,
            last_seq=last_seq,
            updated_at=request.now,
            update=request.update,
        )

    def search_events(
        self,
        conversation_id: str,
        flt: EventFilter,
        *,
        order: Order,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Event], str | None]:
        with self._read() as conn:
            window = seq_window(conn, conversation_id, flt)
            sql, params = search_sql(_EVENT_COLUMNS, conversation_id, window, order, limit, cursor)
            rows = conn.execute(sql, params).fetchall()
        page = [_event(conversation_id, row) for row in rows[:limit]]
        more = len(rows) > limit
        return page, encode_cursor(EventCursor(page[-1].seq, order)) if more else None

    def count_events(self, conversation_id: str, flt: EventFilter) -> int:
        with self._read() as conn:
            where, params = event_where(conversation_id, seq_window(conn, conversation_id, flt))
            row = conn.execute(f"SELECT count(*) FROM events WHERE {where}", params).fetchone()
        return int(row[0])

    def get_event(self, conversation_id: str, seq: int) -> Event | None:
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE conversation_id = ? AND seq = ?"
        with self._read() as conn:
            row = conn.execute(sql, (conversation_id, seq)).fetchone()
        return None if row is None else _event(conversation_id, row)

    def events_after(self, conversation_id: str, after_seq: int, limit: int) -> list[Event]:
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE conversation_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?"
        )
        with self._read() as conn:
            rows = conn.execute(sql, (conversation_id, after_seq, limit)).fetchall()
        return [_event(conversation_id, row) for row in rows]
