"""The run queue every instance shares, in the database: admitting runs to it,
their places in it, and taking them out of it before any instance does.

A run waits as a conversation with the status "queued" that no instance owns
yet, ordered by its place in the queue order, which a database sequence gives,
since any instance may queue a run. Admissions take one advisory lock for the
length of their transaction, so that the queue's bound holds across instances:
two instances counting the waiting runs at once would both admit the last one.
Instances taking runs (see :mod:`laneway.cluster.leases`) lock only the rows
they take, and never that lock, so admitting never waits for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import psycopg

from laneway.models import (
    ACTIVE_STATUSES,
    ConversationRecord,
    ConversationUpdate,
    NewEvent,
    Status,
    status_event,
)
from laneway.store._append import Append
from laneway.store._postgres_schema import MIGRATION_LOCK
from laneway.store._postgres_writes import write_append, write_conversation
from laneway.store._rows import CONVERSATION_COLUMNS, CONVERSATION_FIELDS, conversation_row
from laneway.store.base import NotFound
from laneway.store.notices import notify_appended

# The channel that tells instances a run was queued; its payload is empty.
QUEUE_CHANNEL = "laneway_queue"
# Any number but the migrations' lock (see _postgres_schema).
_ADMISSION_LOCK = MIGRATION_LOCK + 2
WAITING_WHERE = "status = 'queued' AND owner IS NULL"
_WAITING = f"SELECT count(*) FROM conversations WHERE {WAITING_WHERE}"
_ROW = "SELECT status, owner FROM conversations WHERE id = %s"
_RUN_WANTED = "UPDATE conversations SET run_wanted_seq = GREATEST(run_wanted_seq, %s) WHERE id = %s"
_NEXT_PLACE = "SELECT nextval('queue_orders')"
_INSERT = (
    f"INSERT INTO conversations ({CONVERSATION_COLUMNS}, last_stamp)"
    f" VALUES ({', '.join(['%s'] * (len(CONVERSATION_FIELDS) + 1))})"
)
_PLACE = "SELECT queue_order, pk FROM conversations WHERE id = %s AND " + WAITING_WHERE
_AHEAD = (
    f"SELECT count(*) FROM conversations WHERE {WAITING_WHERE} AND (queue_order, pk) < (%s, %s)"
)
_POSITIONS = (
    f"SELECT id, row_number() OVER (ORDER BY queue_order, pk) FROM conversations"
    f" WHERE {WAITING_WHERE}"
)
_LOCK_WAITING = f"SELECT 1 FROM conversations WHERE id = %s AND {WAITING_WHERE} FOR UPDATE"


class Admission(msgspec.Struct):
    """What an admission stored: the appends made, whether the run was queued,
    and, if the queue was full, how many runs were waiting; and the status and
    the owner the conversation had."""

    written: list[Append]
    queued: bool = False
    full_at: int | None = None
    status: Status | None = None
    owner: str | None = None


def _lock_admissions(conn: psycopg.Connection) -> int:
    """Take the admission lock until the transaction ends; the runs waiting now."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADMISSION_LOCK,))
    row = conn.execute(_WAITING).fetchone()
    return int(row[0]) if row is not None else 0


def _next_place(conn: psycopg.Connection) -> int:
    row = conn.execute(_NEXT_PLACE).fetchone()
    assert row is not None
    return int(row[0])


def announce(conn: psycopg.Connection) -> None:
    # Delivered when the transaction commits, and not at all if it rolls back.
    conn.execute("SELECT pg_notify(%s, '')", (QUEUE_CHANNEL,))


def create(
    conn: psycopg.Connection,
    record: ConversationRecord,
    events: Sequence[NewEvent],
    *,
    max_waiting: int,
    by: str,
) -> Admission:
    """Create a conversation whose run is queued at once, with ``events``; if the
    queue is full, create it as ``record`` says, with ``events``, and say so.
    ``by``: the instance writing, as every write here announces (see notices)."""
    waiting = _lock_admissions(conn)
    full = waiting >= max_waiting
    if not full:
        place = _next_place(conn)
        record = msgspec.structs.replace(record, status="queued", queue_order=place)
        events = [*events, status_event("queued")]
    request = Append(record.id, events, None)
    write_conversation(conn, _INSERT, conversation_row(record, len(request.prepared)), request)
    notify_appended(conn, by, [request])
    if full:
        return Admission([request], full_at=waiting)
    announce(conn)
    return Admission([request], queued=True)


def enqueue(
    conn: psycopg.Connection,
    conversation_id: str,
    first: Sequence[NewEvent],
    *,
    max_waiting: int,
    by: str,
    unless_active: bool = True,
) -> Admission:
    """Queue a run of the conversation, storing ``first`` in the same write as
    its "queued" status. Nothing is queued, and ``first`` is stored alone, if
    the queue is full; with ``unless_active``, nothing at all is written if a
    run is queued or running already. Raises NotFound."""
    waiting = _lock_admissions(conn)
    status, owner = status_and_owner(conn, conversation_id, lock=True)
    active = status in ACTIVE_STATUSES
    if active and unless_active:
        return Admission([], status=status, owner=owner)
    if active or waiting >= max_waiting:
        # The run under way reads ``first``, or the queue has no room for one.
        written = [Append(conversation_id, first, None)] if first else []
        for request in written:
            write_append(conn, request)
            notify_appended(conn, by, [request])
            if active:
                # Should that run end without reading it, its release queues
                # another (see leases.release).
                conn.execute(_RUN_WANTED, (request.first_seq, conversation_id))
        full_at = None if active else waiting
        return Admission(written, full_at=full_at, status=status, owner=owner)
    update = ConversationUpdate(status="queued", queue_order=_next_place(conn))
    request = Append(conversation_id, [*first, status_event("queued")], update)
    write_append(conn, request)
    notify_appended(conn, by, [request])
    announce(conn)
    return Admission([request], queued=True, status=status, owner=owner)


def leave(conn: psycopg.Connection, conversation_id: str, reason: str, *, by: str) -> Append | None:
    """Take a run no instance has taken yet out of the queue, pausing it with
    ``reason``; None if it is not waiting (taken, ended, or never queued)."""
    if conn.execute(_LOCK_WAITING, (conversation_id,)).fetchone() is None:
        return None
    request = Append(conversation_id, [status_event("paused", reason)], _PAUSED)
    write_append(conn, request)
    notify_appended(conn, by, [request])
    return request


_PAUSED = ConversationUpdate(status="paused")


def position(conn: psycopg.Connection, conversation_id: str) -> int | None:
    """The 1-based place of a waiting run in the queue; None if it is not waiting."""
    row = conn.execute(_PLACE, (conversation_id,)).fetchone()
    if row is None:
        return None
    ahead = conn.execute(_AHEAD, row).fetchone()
    return 1 + (int(ahead[0]) if ahead is not None else 0)


def positions(conn: psycopg.Connection) -> dict[str, int]:
    """The place of every waiting run, by conversation id."""
    return {cid: int(place) for cid, place in conn.execute(_POSITIONS).fetchall()}


def status_and_owner(
    conn: psycopg.Connection, conversation_id: str, *, lock: bool = False
) -> tuple[Status, str | None]:
    """The conversation's status and the instance holding its run, if one does;
    with ``lock``, its row locked until the transaction ends. Raises NotFound."""
    row = conn.execute(_ROW + (" FOR UPDATE" if lock else ""), (conversation_id,)).fetchone()
    if row is None:
        raise NotFound(f"no conversation {conversation_id!r}")
    return row[0], row[1]
