"""The PostgreSQL event store: any number of threads, and of laneway processes.

psycopg 3's blocking API, through its connection pool: the store is called
from the io lane's worker threads and from run threads, like the SQLite store,
and psycopg's async API does not run under trio. One transaction per write;
reads run in autocommit, one statement each. Seq allocation and the order of
stamps are kept by the database itself (see :mod:`_postgres_writes`), so
several stores on one database, in several processes, write correctly.

Unlike the SQLite store it keeps no records in memory: another process may
have changed any of them. The run queue, the leases on runs and the instances
sharing the database are :mod:`laneway.cluster`'s, in their own tables and
columns, written through :meth:`PostgresEventStore.transaction`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from laneway.models import (
    ConversationRecord,
    ConversationUpdate,
    Event,
    EventFilter,
    NewEvent,
    Order,
    utc_now,
)
from laneway.store._append import Append
from laneway.store._postgres_query import event_where, search_sql
from laneway.store._postgres_recovery import pause, requeue
from laneway.store._postgres_schema import migrate
from laneway.store._postgres_writes import PROBE, write_append, write_conversation
from laneway.store._rows import (
    CONVERSATION_COLUMNS,
    CONVERSATION_FIELDS,
    EVENT_COLUMNS,
    conversation_row,
    event_page,
    to_record,
)
from laneway.store._sql_reads import SQLReads
from laneway.store.base import Recovery, StoreUnavailable, check_queue_order
from laneway.store.notices import check_instance_id, notify_appended, notify_deleted

__all__ = ["PostgresEventStore"]

_INSERT_CONVERSATION = (
    f"INSERT INTO conversations ({CONVERSATION_COLUMNS}, last_stamp)"
    f" VALUES ({', '.join(['%s'] * (len(CONVERSATION_FIELDS) + 1))})"
)
_RUNNING = "SELECT id FROM conversations WHERE status = 'running' ORDER BY pk FOR UPDATE"
_QUEUED = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE status = 'queued'"
    " ORDER BY queue_order, pk FOR UPDATE"
)
_LAST_QUEUE_ORDER = (
    "SELECT coalesce(max(queue_order), 0) FROM conversations WHERE status = 'queued'"
)
# Connections held at most. Every thread that calls the store holds one only
# for a statement or a transaction, so fewer than the threads that may call it
# (the io, run and tool lanes: 34 by default) serve them, and several
# instances stay well within the server's max_connections (100 by default).
POOL_SIZE = 16
# How long a call waits for a connection, or a new one to be made, before the
# store counts as unavailable.
CONNECT_TIMEOUT_S = 10.0
# The errors that say the database cannot be reached or written now (a lost
# connection, a full disk, a server shutting down or read-only), rather than
# that the statement itself was wrong.
# libpq's limits on a TCP connection that stops answering, as in a network
# partition: without them a statement in flight waits for the kernel to give up
# retransmitting, a quarter of an hour, long after its run's lease has expired.
# Unsent data unacknowledged for TCP_USER_TIMEOUT ends the connection, and so
# does an idle one whose keepalive probes go unanswered. Unix sockets ignore them.
_TIMEOUTS: dict[str, Any] = {
    "connect_timeout": int(CONNECT_TIMEOUT_S),
    "tcp_user_timeout": int(CONNECT_TIMEOUT_S * 1000),
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
# The server's side of the same: a session whose client vanished in the middle
# of a transaction (a partition between a statement and the commit) would keep
# its row locks until the server's own keepalives gave up, two hours by default,
# and no other instance could settle that run meanwhile. Every transaction here
# lasts milliseconds.
_SESSION = (
    "SET idle_in_transaction_session_timeout = '5s';"
    " SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2;"
    " SET tcp_keepalives_count = 3"
)


def _configure(conn: psycopg.Connection) -> None:
    conn.execute(_SESSION)


_UNAVAILABLE = (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction)


class PostgresEventStore(SQLReads):
    """An :class:`~laneway.store.base.EventStore` in a PostgreSQL database, given
    by a libpq URL (``postgresql://user@host/dbname``).

    Each write that adds events, or deletes a conversation, announces it to
    the other instances (see :mod:`~laneway.store.notices`), as coming from
    ``instance_id``: by default a new one for each store.
    """

    placeholder = "%s"

    def __init__(
        self, url: str, *, pool_size: int = POOL_SIZE, instance_id: str | None = None
    ) -> None:
        # Names this process among the instances sharing the database.
        self.instance_id = check_instance_id(
            uuid.uuid4().hex if instance_id is None else instance_id
        )
        try:
            with psycopg.connect(url, **_TIMEOUTS) as conn:
                migrate(conn)
                (last_queue_order,) = conn.execute(_LAST_QUEUE_ORDER).fetchone() or (0,)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot open the PostgreSQL database: {exc}") from exc
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, **_TIMEOUTS},
            # A round trip before each use: after the server restarts, or fails
            # over, every pooled connection is dead, and without it each would
            # fail one call before the pool replaced it.
            check=ConnectionPool.check_connection,
            configure=_configure,
            timeout=CONNECT_TIMEOUT_S,
            name="laneway-store",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except psycopg.OperationalError as exc:
            self._pool.close()
            raise StoreUnavailable(f"cannot connect to the PostgreSQL database: {exc}") from exc
        self._last_queue_order = int(last_queue_order)
        self._lock = threading.Lock()
        # For connections of the cluster's own (its listener).
        self.url = url
        # Why the last write failed, if the database refused it; None once one succeeds.
        self._problem: str | None = None

    def close(self) -> None:
        self._pool.close()

    # -- connections ---------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"the database cannot be read: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        """A write transaction, committed on leaving; rolled back whole on any error."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except _UNAVAILABLE as exc:
            refused = StoreUnavailable(f"the database cannot be written: {exc}")
            self._problem = str(refused)
            raise refused from exc
        self._problem = None

    # The cluster's own statements (leases, the run queue, instances) run in
    # the same connections, with the same errors.
    reading = _read
    transaction = _transaction

    # -- health --------------------------------------------------------------

    def write_problem(self) -> str | None:
        return self._problem

    def probe_write(self) -> None:
        with self._transaction() as conn:
            conn.execute(PROBE, (utc_now(),))

    # -- conversations -------------------------------------------------------

    def create_conversation(
        self, record: ConversationRecord, events: Sequence[NewEvent] = ()
    ) -> list[Event]:
        check_queue_order(record.status, record.queue_order)
        request = Append(record.id, events, None)
        row = conversation_row(record, len(request.prepared))
        with self._transaction() as conn:
            write_conversation(conn, _INSERT_CONVERSATION, row, request)
            notify_appended(conn, self.instance_id, (request,))
        if record.queue_order is not None:
            self._note_queue_order(record.queue_order)
        return request.stored()

    def cached_conversation(self, conversation_id: str) -> ConversationRecord | None:
        # Another instance may have changed any record: none is ever kept here.
        return None

    def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        sql = f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = %s"
        with self._read() as conn:
            row = conn.execute(sql, (conversation_id,)).fetchone()
        return None if row is None else to_record(row)

    def delete_conversation(self, conversation_id: str) -> bool:
        # The foreign keys' ON DELETE CASCADE removes the events and tool notes.
        with self._transaction() as conn:
            cur = conn.execute("DELETE FROM conversations WHERE id = %s", (conversation_id,))
            if cur.rowcount > 0:
                notify_deleted(conn, self.instance_id, conversation_id)
        return cur.rowcount > 0

    def recover_interrupted(
        self, reason: str, *, room: int, requeue_reason: str, full_reason: str
    ) -> Recovery:
        # For a database one process uses alone: instances sharing one settle
        # each other's runs through leases instead (laneway.cluster).
        room = max(room, 0)
        with self._transaction() as conn:
            running = [cid for (cid,) in conn.execute(_RUNNING).fetchall()]
            queued = [to_record(row) for row in conn.execute(_QUEUED).fetchall()]
            paused = pause(conn, running, reason, were_running=True)
            requeued, requeues = requeue(conn, queued[:room], requeue_reason)
            # A queued one's last run ended, and answered its calls.
            rest = [record.id for record in queued[room:]]
            not_requeued = pause(conn, rest, full_reason, were_running=False)
            notify_appended(conn, self.instance_id, [*paused, *requeues, *not_requeued])
        return Recovery(paused=running, requeued=requeued, not_requeued=rest)

    def last_queue_order(self) -> int:
        return self._last_queue_order

    def _note_queue_order(self, queue_order: int) -> None:
        with self._lock:
            self._last_queue_order = max(self._last_queue_order, queue_order)

    def mark_paused(
        self, conversation_ids: Sequence[str], reason: str, *, were_running: bool = False
    ) -> dict[str, list[Event]]:
        with self._transaction() as conn:
            requests = pause(conn, conversation_ids, reason, were_running=were_running)
            notify_appended(conn, self.instance_id, requests)
        return {request.conversation_id: request.stored() for request in requests}

    # -- events --------------------------------------------------------------

    def append(
        self,
        conversation_id: str,
        events: Sequence[NewEvent],
        update: ConversationUpdate | None = None,
    ) -> list[Event]:
        return self._append(conversation_id, events, update, None)

    def append_fenced(
        self,
        conversation_id: str,
        events: Sequence[NewEvent],
        update: ConversationUpdate | None,
        *,
        lease: tuple[str, int],
    ) -> list[Event]:
        """:meth:`append` for a run holding ``lease`` (owner, fencing number):
        raises LeaseLost, writing nothing, if that lease no longer holds the run."""
        return self._append(conversation_id, events, update, lease)

    def _append(
        self,
        conversation_id: str,
        events: Sequence[NewEvent],
        update: ConversationUpdate | None,
        lease: tuple[str, int] | None,
    ) -> list[Event]:
        if update is not None:
            check_queue_order(update.status, update.queue_order)
            if isinstance(update.queue_order, int):
                # Noted before the write, as the SQLite store does: one rolled
                # back still orders after every place given before it.
                self._note_queue_order(update.queue_order)
        request = Append(conversation_id, events, update)
        with self._transaction() as conn:
            write_append(conn, request, lease)
            notify_appended(conn, self.instance_id, (request,))
        return request.stored()

    def note_tools_waiting(self, conversation_id: str, call_ids: Sequence[str]) -> None:
        with self._transaction() as conn:
            write_append(conn, Append(conversation_id, (), None, waiting=call_ids))

    def note_tool_begun(self, conversation_id: str, call_id: str) -> None:
        with self._transaction() as conn:
            write_append(conn, Append(conversation_id, (), None, begun=(call_id,)))

    def search_events(
        self,
        conversation_id: str,
        flt: EventFilter,
        *,
        order: Order,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Event], str | None]:
        sql, params = search_sql(EVENT_COLUMNS, conversation_id, flt, order, limit, cursor)
        with self._read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return event_page(conversation_id, rows, order, limit)

    def count_events(self, conversation_id: str, flt: EventFilter) -> int:
        where, params = event_where(conversation_id, flt)
        with self._read() as conn:
            row = conn.execute(f"SELECT count(*) FROM events WHERE {where}", params).fetchone()
        return int(row[0]) if row is not None else 0
