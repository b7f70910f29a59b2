"""Pausing runs that the process can no longer finish, at startup or shutdown,
and queueing again, at startup, the runs a crash left queued.

A run cut off mid-step may leave tool calls with no result; each gets one, in
the same transaction as the pause (see :mod:`laneway.store._recovery`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import msgspec

from laneway.models import ConversationRecord, ConversationUpdate, NewEvent, Status, status_event
from laneway.store._append import Append
from laneway.store._recovery import TOOL_EVENTS_WHERE, requeued_records, tool_answers
from laneway.store._sqlite_writer import INSERT_EVENT, Writer
from laneway.store.base import NotFound

_TOOL_EVENTS = (
    f"SELECT kind, data FROM events WHERE conversation_id = ? AND {TOOL_EVENTS_WHERE} ORDER BY seq"
)
_WAITING = "SELECT call_id FROM tool_waits WHERE conversation_id = ?"
_FORGET_WAITING = "DELETE FROM tool_waits WHERE conversation_id = ?"
_SET_STATUS_ALL = (
    "UPDATE conversations SET last_seq = last_seq + 1, updated_at = ?, status = ?"
    " WHERE id IN (SELECT value FROM json_each(?)) RETURNING id, last_seq"
)


def tool_results_for(conn: sqlite3.Connection, conversation_id: str, reason: str) -> list[NewEvent]:
    """A result for each unanswered call (see tool_answers); its notes go."""
    waiting = {row[0] for row in conn.execute(_WAITING, (conversation_id,))}
    conn.execute(_FORGET_WAITING, (conversation_id,))
    return tool_answers(conn.execute(_TOOL_EVENTS, (conversation_id,)), waiting, reason)


def pause_locked(
    writer: Writer,
    conn: sqlite3.Connection,
    conversation_ids: Sequence[str],
    reason: str,
    *,
    were_running: bool,
) -> list[Append]:
    """Mark each conversation that exists paused, first answering the open tool
    calls of those whose runs ``were_running``; the writer's lock and a
    transaction are held."""
    if not were_running:
        return _status_all_at_once(writer, conn, conversation_ids, "paused", reason)
    status = status_event("paused", reason)
    update = ConversationUpdate(status="paused")
    written = []
    for cid in conversation_ids:
        request = Append(cid, [*tool_results_for(conn, cid, reason), status], update)
        try:
            writer.append_locked(conn, request)
        except NotFound:
            continue
        written.append(request)
    return written


def requeue_locked(
    writer: Writer, conn: sqlite3.Connection, records: Sequence[ConversationRecord], reason: str
) -> tuple[list[ConversationRecord], list[Append]]:
    """Give each queued conversation a status event "queued" carrying ``reason``,
    keeping its place in the queue order; return the records as they now are,
    in the order given, and the appends made. The writer's lock and a
    transaction are held."""
    written = _status_all_at_once(writer, conn, [r.id for r in records], "queued", reason)
    return requeued_records(records, written), written


def _status_all_at_once(
    writer: Writer,
    conn: sqlite3.Connection,
    conversation_ids: Sequence[str],
    status: Status,
    reason: str,
) -> list[Append]:
    """One status event each, in two statements whatever their number: pausing
    10,000 queued runs one append at a time took a second of the shutdown grace
    period."""
    event = status_event(status, reason)
    update = ConversationUpdate(status=status)
    now = writer.now()
    ids = msgspec.json.encode(list(conversation_ids)).decode()
    rows = conn.execute(_SET_STATUS_ALL, (now, status, ids)).fetchall()
    written = []
    for cid, last_seq in rows:
        request = Append(cid, [event], update)
        request.now = now
        request.first_seq = last_seq
        written.append(request)
    conn.executemany(INSERT_EVENT, [row for r in written for row in r.rows()])
    return written
