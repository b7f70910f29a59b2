"""The writes of :class:`~laneway.store.postgres.PostgresEventStore`, each inside
a transaction its caller holds.

Seqs stay gap-free under any number of writers, in this process or others:
an append first advances its conversation's ``last_seq`` with an UPDATE, which
locks the row until the transaction ends, and takes its seqs from what the
UPDATE returns. A second writer's UPDATE waits for the first to commit or roll
back, and then reads the row as it was left, so no two appends get the same
seq and a rolled-back one leaves no hole.

Stamps never go backwards within a conversation, whatever the clocks of the
machines writing to it: each is the later of the writer's clock and the
conversation's ``last_stamp``, set in the same UPDATE. So a time range of one
conversation's events is a run of its seqs, as in the SQLite store.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import psycopg

from laneway.models import ConversationUpdate, Status, status_event, utc_now
from laneway.store._append import Append
from laneway.store.base import LeaseLost, NotFound

_INSERT_EVENT = (
    "INSERT INTO events (conversation_id, seq, id, timestamp, kind, source, data, text_cf)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
_INSERT_TOOL_WAIT = (
    "INSERT INTO tool_waits (conversation_id, call_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"
)
_DELETE_TOOL_WAIT = "DELETE FROM tool_waits WHERE conversation_id = %s AND call_id = %s"
# The advance of last_seq and of the stamp floor shared by every write below;
# in SET, every right-hand side reads the row as it was before the UPDATE.
_ADVANCE = (
    "UPDATE conversations SET last_seq = last_seq + %s,"
    " last_stamp = GREATEST(last_stamp, %s), updated_at = GREATEST(last_stamp, %s)"
)
_EXISTS = "SELECT 1 FROM conversations WHERE id = %s"
_SET_STATUS_ALL = f"{_ADVANCE}, status = %s WHERE id = ANY(%s) RETURNING id, last_seq, last_stamp"
PROBE = (
    "INSERT INTO write_probe (id, written_at) VALUES (1, %s)"
    " ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at"
)


@functools.cache
def _update_sql(fields: tuple[str, ...], fenced: bool) -> str:
    # One statement per combination of updated fields, so that psycopg prepares
    # each on the connections that run it often.
    sets = "".join(f", {name} = %s" for name in fields)
    lease = " AND owner = %s AND fence = %s" if fenced else ""
    return f"{_ADVANCE}{sets} WHERE id = %s{lease} RETURNING last_seq, last_stamp"


def _rows(request: Append) -> list[tuple[Any, ...]]:
    return [(*row[:-1], None if row[-1] is None else row[-1].encode()) for row in request.rows()]


def write_conversation(
    conn: psycopg.Connection, insert: str, row: list[Any], request: Append
) -> None:
    """Insert a new conversation, with the row ``insert`` takes but for its
    last stamp, and its first events."""
    request.now = utc_now()
    request.first_seq = 1
    conn.execute(insert, [*row, request.now])
    insert_events(conn, request)


def insert_events(conn: psycopg.Connection, request: Append) -> None:
    rows = _rows(request)
    if len(rows) == 1:
        conn.execute(_INSERT_EVENT, rows[0])
    elif rows:
        conn.cursor().executemany(_INSERT_EVENT, rows)


def write_append(
    conn: psycopg.Connection, request: Append, lease: tuple[str, int] | None = None
) -> None:
    """Write one append; raises NotFound, writing nothing, if its conversation is
    gone. With a ``lease`` (owner, fencing number), of a run's own write, it
    raises LeaseLost, writing nothing, unless that lease still holds the run."""
    cid = request.conversation_id
    if not request.changes_conversation:
        # Only notes of tool calls: nothing of the conversation itself changes.
        try:
            conn.cursor().executemany(_INSERT_TOOL_WAIT, [(cid, c) for c in request.waiting])
        except psycopg.errors.ForeignKeyViolation:
            raise NotFound(f"no conversation {cid!r}") from None
        conn.cursor().executemany(_DELETE_TOOL_WAIT, [(cid, c) for c in request.begun])
        request.first_seq = 1
        request.now = utc_now()
        return
    changes = request.update.changes() if request.update is not None else {}
    if isinstance(error := changes.get("last_error"), str):
        # A text column cannot hold NUL, which an agent's exception message may
        # carry; SQLite keeps it, and the error event keeps it in its JSON.
        changes["last_error"] = error.replace("\x00", "\ufffd")
    count, now = len(request.prepared), utc_now()
    sql = _update_sql(tuple(changes), lease is not None)
    row = conn.execute(sql, (count, now, now, *changes.values(), cid, *(lease or ()))).fetchone()
    if row is None:
        if lease is not None and conn.execute(_EXISTS, (cid,)).fetchone() is not None:
            raise LeaseLost(f"the lease on the run of {cid!r} is no longer {lease}")
        raise NotFound(f"no conversation {cid!r}")
    last_seq, request.now = row
    request.first_seq = last_seq - count + 1
    insert_events(conn, request)


def set_status_all(
    conn: psycopg.Connection, conversation_ids: Sequence[str], status: Status, reason: str
) -> list[Append]:
    """One status event each, in two statements whatever their number (see
    _sqlite_recovery); ids of conversations that are gone are left out."""
    event = status_event(status, reason)
    update = ConversationUpdate(status=status)
    now = utc_now()
    rows = conn.execute(_SET_STATUS_ALL, (1, now, now, status, list(conversation_ids)))
    written = []
    for cid, last_seq, stamp in rows.fetchall():
        request = Append(cid, [event], update)
        request.now = stamp
        request.first_seq = last_seq
        written.append(request)
    rows_all = [row for request in written for row in _rows(request)]
    if rows_all:
        conn.cursor().executemany(_INSERT_EVENT, rows_all)
    return written
