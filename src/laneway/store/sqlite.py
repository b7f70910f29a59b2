"""The SQLite event store: one process, many threads.

Writes go through one connection (see :mod:`laneway.store._sqlite_writer`).
Reads of a file database use one connection per thread, so they run alongside
each other and alongside the writer (WAL). Checkpoints run on a thread of their
own (see :mod:`laneway.store._sqlite_checkpoint`); inside commits they took
about a fifth of append time.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import msgspec

from laneway.models import (
    ConversationRecord,
    ConversationUpdate,
    Event,
    EventFilter,
    NewEvent,
    Order,
)
from laneway.store._append import Append
from laneway.store._record_cache import RecordCache
from laneway.store._rows import (
    CONVERSATION_COLUMNS,
    CONVERSATION_FIELDS,
    EVENT_COLUMNS,
    conversation_row,
    event_page,
    to_record,
)
from laneway.store._sql_reads import SQLReads
from laneway.store._sqlite_checkpoint import Checkpointer
from laneway.store._sqlite_query import event_where, search_sql, seq_window
from laneway.store._sqlite_recovery import pause_locked, requeue_locked
from laneway.store._sqlite_schema import claim, connect, is_memory, migrate
from laneway.store._sqlite_writer import Writer, insert_events
from laneway.store.base import DatabaseInUse, Recovery, check_queue_order

__all__ = ["DatabaseInUse", "SQLiteEventStore"]

_INSERT_CONVERSATION = (
    f"INSERT INTO conversations ({CONVERSATION_COLUMNS})"
    f" VALUES ({', '.join('?' * len(CONVERSATION_FIELDS))})"
)
_RUNNING = "SELECT id FROM conversations WHERE status = 'running' ORDER BY pk"
# pk only breaks ties that cannot happen; conversations_status finds the rows.
_QUEUED = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE status = 'queued'"
    " ORDER BY queue_order, pk"
)
# Only the numbers of queued conversations are ever compared (see
# recover_interrupted), so numbering goes on from the largest of theirs.
_LAST_QUEUE_ORDER = (
    "SELECT coalesce(max(queue_order), 0) FROM conversations WHERE status = 'queued'"
)
# Records kept in memory; a few MB, and more than the conversations a busy server
# touches between two reads of the same one.
RECORD_CACHE_SIZE = 4096
# Events committed between background checkpoints: ~1,500 WAL pages when ten runs
# append, against the 10,000 the writer would otherwise copy in one go. 200 and
# 2,000 measured the same.
CHECKPOINT_EVERY_EVENTS = 500


class SQLiteEventStore(SQLReads):
    """An :class:`~laneway.store.base.EventStore` in a SQLite file, or ``":memory:"``.

    One store per file: opening a file that another store (in any process)
    holds raises :class:`DatabaseInUse`.
    """

    placeholder = "?"

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
            self._claim = claim(path)
        try:
            conn = connect(path, reader=False)
        except BaseException:
            self._release_claim()
            raise
        try:
            migrate(conn)
            self._checkpointer = None if self._memory else Checkpointer(path, checkpoint_every)
        except BaseException:
            conn.close()
            self._release_claim()
            raise
        # The newest stamp held: each conversation's last event, one primary-key
        # lookup per conversation.
        (last_stamp,) = conn.execute(
            "SELECT coalesce(max(e.timestamp), '') FROM conversations c CROSS JOIN events e"
            " WHERE e.conversation_id = c.id AND e.seq = c.last_seq"
        ).fetchone()
        (last_queue_order,) = conn.execute(_LAST_QUEUE_ORDER).fetchone()
        self._writer = Writer(
            conn,
            last_stamp,
            self._committed,
            self._checkpoint_count,
            last_queue_order=last_queue_order,
        )
        self._local = threading.local()
        self._readers: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        self._readers_lock = threading.Lock()
        self._closed = False

    # -- connections ---------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        if self._memory:
            with self._writer.lock:
                yield self._writer.conn
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

    def close(self) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.close()
        with self._readers_lock:
            self._closed = True
            readers, self._readers = self._readers, []
        for _, conn in readers:
            conn.close()
        with self._writer.lock:
            self._writer.conn.close()
        self._release_claim()

    def _release_claim(self) -> None:
        if self._claim is not None:
            self._claim.close()  # closing the file drops the lock
            self._claim = None

    def _checkpoint_count(self, events: int) -> None:
        # Read once: close() may clear it meanwhile, and a closed one ignores this.
        checkpointer = self._checkpointer
        if checkpointer is not None:
            checkpointer.wrote(events)

    # -- health --------------------------------------------------------------

    def write_problem(self) -> str | None:
        return self._writer.problem

    def probe_write(self) -> None:
        self._writer.probe()

    # -- conversations -------------------------------------------------------

    def create_conversation(
        self, record: ConversationRecord, events: Sequence[NewEvent] = ()
    ) -> list[Event]:
        check_queue_order(record.status, record.queue_order)
        request = Append(record.id, events, None)
        row = conversation_row(record, len(request.prepared))
        with self._writer.transaction() as conn:
            conn.execute(_INSERT_CONVERSATION, row)
            if record.queue_order is not None:
                self._writer.note_queue_order(record.queue_order)
            request.now = self._writer.now()
            request.first_seq = 1
            insert_events(conn, request)
        self._records.put(msgspec.structs.replace(record, last_seq=len(request.prepared)))
        return request.stored()

    def cached_conversation(self, conversation_id: str) -> ConversationRecord | None:
        return self._records.get(conversation_id)

    def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        cached = self._records.get(conversation_id)
        if cached is not None:
            return cached
        generation = self._records.generation
        sql = f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?"
        with self._read() as conn:
            row = conn.execute(sql, (conversation_id,)).fetchone()
        if row is None:
            return None
        record = to_record(row)
        self._records.fill(record, generation)
        return record

    def delete_conversation(self, conversation_id: str) -> bool:
        # The foreign keys' ON DELETE CASCADE removes the events and tool notes.
        with self._writer.transaction() as conn:
            cur = conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        # After the commit: a reader whose snapshot predates it cannot cache it back.
        self._records.discard(conversation_id)
        return cur.rowcount > 0

    def recover_interrupted(
        self, reason: str, *, room: int, requeue_reason: str, full_reason: str
    ) -> Recovery:
        room = max(room, 0)
        with self._writer.transaction() as conn:
            running = [cid for (cid,) in conn.execute(_RUNNING)]
            queued = [to_record(row) for row in conn.execute(_QUEUED)]
            requests = pause_locked(self._writer, conn, running, reason, were_running=True)
            requeued, written = requeue_locked(self._writer, conn, queued[:room], requeue_reason)
            requests += written
            # A queued one's last run ended, and answered its calls.
            rest = [record.id for record in queued[room:]]
            requests += pause_locked(self._writer, conn, rest, full_reason, were_running=False)
        for request in requests:
            self._committed(request)
        return Recovery(paused=running, requeued=requeued, not_requeued=rest)

    def last_queue_order(self) -> int:
        return self._writer.last_queue_order

    def mark_paused(
        self, conversation_ids: Sequence[str], reason: str, *, were_running: bool = False
    ) -> dict[str, list[Event]]:
        with self._writer.transaction() as conn:
            requests = pause_locked(
                self._writer, conn, conversation_ids, reason, were_running=were_running
            )
        stored = {}
        for request in requests:
            self._committed(request)
            stored[request.conversation_id] = request.stored()
        return stored

    # -- events --------------------------------------------------------------

    def append(
        self,
        conversation_id: str,
        events: Sequence[NewEvent],
        update: ConversationUpdate | None = None,
    ) -> list[Event]:
        if update is not None:
            # Before it joins a batch, whose other appends it must not fail.
            check_queue_order(update.status, update.queue_order)
        # Ids and JSON are made before taking the lock, to keep it short.
        return self._writer.append(Append(conversation_id, events, update))

    def note_tools_waiting(self, conversation_id: str, call_ids: Sequence[str]) -> None:
        self._writer.append(Append(conversation_id, (), None, waiting=call_ids))

    def note_tool_begun(self, conversation_id: str, call_id: str) -> None:
        self._writer.append(Append(conversation_id, (), None, begun=(call_id,)))

    def _committed(self, request: Append) -> None:
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
            sql, params = search_sql(EVENT_COLUMNS, conversation_id, window, order, limit, cursor)
            rows = conn.execute(sql, params).fetchall()
        return event_page(conversation_id, rows, order, limit)

    def count_events(self, conversation_id: str, flt: EventFilter) -> int:
        with self._read() as conn:
            where, params = event_where(conversation_id, seq_window(conn, conversation_id, flt))
            row = conn.execute(f"SELECT count(*) FROM events WHERE {where}", params).fetchone()
        return int(row[0])
