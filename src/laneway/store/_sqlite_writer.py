"""The one writer of :class:`~laneway.store.sqlite.SQLiteEventStore`.

All writes go through one connection under a lock, which also makes seqs
gap-free without retries. Appends are combined: a thread queues its append,
then takes the write lock, and whoever holds the lock commits every queued
append in one transaction; a waiter that finds its append already committed
leaves at once. With ten run threads this measured ~5% above one commit per
append; a dedicated writer thread, and waking waiters in batches, measured
below both.

What limits appends, as measured here: a runner-shaped commit writes a WAL
frame for each b-tree page it touches, so each secondary index costs every
append a page per conversation (hence one index for kind and source, and time
ranges found by bisecting seqs). Most batches hold a single append (77% with
ten run threads), and ten threads append ~25% less than one thread writing for
ten conversations in turn: what they lose is handing over the write lock and
the GIL. Smaller pages (1-2 KB) and the GIL switch interval changed nothing;
larger pages (8-16 KB) were slower. Also measured without gain: a whole batch
as one autocommit statement (a multi-row INSERT into a view whose INSTEAD OF
trigger also updates the conversation; through json_each it was slower), a
dedicated writer thread waking each waiter on a lock of its own, and a leader
thread committing for the others while they wait on locks of their own.

A write the disk refuses (full, an I/O error, a read-only file system) raises
:class:`~laneway.store.base.StoreUnavailable` and is remembered as the store's
write problem until a commit succeeds again: the database itself is intact,
since SQLite rolls the transaction back.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from laneway.models import Event, utc_now
from laneway.store._append import Append
from laneway.store.base import NotFound, StoreUnavailable

INSERT_EVENT = (
    "INSERT INTO events (conversation_id, seq, id, timestamp, kind, source, data, text_cf)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_TOOL_WAIT = "INSERT OR IGNORE INTO tool_waits (conversation_id, call_id) VALUES (?, ?)"
_DELETE_TOOL_WAIT = "DELETE FROM tool_waits WHERE conversation_id = ? AND call_id = ?"
_PROBE = (
    "INSERT INTO write_probe (id, written_at) VALUES (1, ?)"
    " ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at"
)
# The errors that say the disk cannot take writes now, rather than that the
# write itself was wrong.
_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_BUSY,
    }
)


def insert_events(conn: sqlite3.Connection, request: Append) -> None:
    rows = request.rows()
    if len(rows) == 1:
        conn.execute(INSERT_EVENT, rows[0])
    elif rows:
        conn.executemany(INSERT_EVENT, rows)


@functools.cache
def _update_sql(fields: tuple[str, ...]) -> str:
    # One statement per combination of updated fields, so sqlite3 caches each.
    # RETURNING reads last_seq in the same statement that advances it.
    sets = "".join(f", {name} = ?" for name in fields)
    return (
        f"UPDATE conversations SET last_seq = last_seq + ?, updated_at = ?{sets}"
        " WHERE id = ? RETURNING last_seq"
    )


def unavailable(exc: sqlite3.Error) -> StoreUnavailable | None:
    """The StoreUnavailable that ``exc`` amounts to, if the disk refused a write."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in _UNAVAILABLE:
        return None
    return StoreUnavailable(f"the database cannot be written: {exc}")


class Writer:
    """The write connection and its lock; every write of the store goes through it."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        last_stamp: str,
        committed: Callable[[Append], None],
        wrote: Callable[[int], None],
        *,
        last_queue_order: int = 0,
    ) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self._committed = committed
        self._wrote = wrote
        # The newest stamp given (see now()).
        self._last_stamp = last_stamp
        # The largest place in the queue order written (see note_queue_order()).
        self.last_queue_order = last_queue_order
        self._queue: list[Append] = []
        self._queue_lock = threading.Lock()
        # Why the last write failed, if the disk refused it; None once one succeeds.
        self.problem: str | None = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction under the lock, committed on leaving."""
        with self.lock:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                self._roll_back()
                raise self._translated(exc) from exc
            self.problem = None

    def _roll_back(self) -> None:
        # After a full disk SQLite may have rolled back already, and a ROLLBACK
        # after an I/O error may fail in turn: the first error is the one to tell.
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    def _translated(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sqlite3.Error):
            refused = unavailable(exc)
            if refused is not None:
                self.problem = str(refused)
                return refused
        return exc

    def probe(self) -> None:
        """A write of nothing that matters, to learn whether writes work again."""
        with self.transaction() as conn:
            conn.execute(_PROBE, (utc_now(),))

    def append(self, request: Append) -> list[Event]:
        with self._queue_lock:
            self._queue.append(request)
        with self.lock:
            if not request.done:
                self._commit_queued()
        if request.error is not None:
            raise request.error
        return request.stored()

    def _commit_queued(self) -> None:
        """Commit every queued append in one transaction; the write lock is held."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
        conn = self.conn
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
                for request in batch:
                    try:
                        self.append_locked(conn, request)
                    except NotFound as exc:
                        # Nothing of it was written; the others commit as usual.
                        request.error = exc
                conn.execute("COMMIT")
            except BaseException as exc:
                self._roll_back()
                raise self._translated(exc) from exc
            self.problem = None
            written = 0
            for request in batch:
                if request.error is None and request.changes_conversation:
                    self._committed(request)
                    written += len(request.prepared)
            self._wrote(written)
        except BaseException as exc:
            for request in batch:
                request.error = exc
            raise
        finally:
            for request in batch:
                request.done = True

    def append_locked(self, conn: sqlite3.Connection, request: Append) -> None:
        """Write one append inside the transaction the caller holds."""
        cid = request.conversation_id
        now = self.now()
        request.now = now
        if not request.changes_conversation:
            # Only notes of tool calls: nothing of the conversation itself changes.
            try:
                conn.executemany(_INSERT_TOOL_WAIT, [(cid, c) for c in request.waiting])
            except sqlite3.IntegrityError:
                raise NotFound(f"no conversation {cid!r}") from None
            conn.executemany(_DELETE_TOOL_WAIT, [(cid, c) for c in request.begun])
            request.first_seq = 1
            return
        changes = request.update.changes() if request.update is not None else {}
        if (queue_order := changes.get("queue_order")) is not None:
            self.note_queue_order(queue_order)
        fields, values = tuple(changes), list(changes.values())
        count = len(request.prepared)
        row = conn.execute(_update_sql(fields), (count, now, *values, cid)).fetchone()
        if row is None:
            raise NotFound(f"no conversation {cid!r}")
        request.first_seq = row[0] - count + 1
        insert_events(conn, request)

    def note_queue_order(self, queue_order: int) -> None:
        """Keep the largest place in the queue order written; call under the write
        lock. One rolled back is kept too: numbers given after it still order
        after every one written."""
        self.last_queue_order = max(self.last_queue_order, queue_order)

    def now(self) -> str:
        """The time to stamp a commit with; call under the write lock. Never earlier
        than a stamp already given, even if the clock steps back: time ranges are
        found by bisecting seqs (see seq_window), which needs stamps in seq order."""
        now = utc_now()
        if now < self._last_stamp:
            now = self._last_stamp
        self._last_stamp = now
        return now
