"""Pausing runs, and queueing again the runs a stopped process left queued, in
:class:`~laneway.store.postgres.PostgresEventStore`, with the rules of
:mod:`laneway.store._sqlite_recovery`, inside a transaction the caller holds."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from laneway.models import ConversationRecord, ConversationUpdate, NewEvent, status_event
from laneway.store._append import Append
from laneway.store._postgres_writes import set_status_all, write_append
from laneway.store._recovery import TOOL_EVENTS_WHERE, requeued_records, tool_answers

_LOCK = "SELECT 1 FROM conversations WHERE id = %s FOR UPDATE"
_TOOL_EVENTS = (
    f"SELECT kind, data FROM events WHERE conversation_id = %s AND {TOOL_EVENTS_WHERE} ORDER BY seq"
)
# Deleting returns the notes, so that reading and forgetting them is one statement.
_FORGET_WAITING = "DELETE FROM tool_waits WHERE conversation_id = %s RETURNING call_id"


def tool_events(conn: psycopg.Connection, conversation_id: str) -> list[tuple[str, str]]:
    """The conversation's tool calls and results, in seq order (see _recovery)."""
    return [(kind, data) for kind, data in conn.execute(_TOOL_EVENTS, (conversation_id,))]


def _tool_results(conn: psycopg.Connection, conversation_id: str, reason: str) -> list[NewEvent]:
    waiting = {call_id for (call_id,) in conn.execute(_FORGET_WAITING, (conversation_id,))}
    return tool_answers(tool_events(conn, conversation_id), waiting, reason)


def pause(
    conn: psycopg.Connection,
    conversation_ids: Sequence[str],
    reason: str,
    *,
    were_running: bool,
) -> list[Append]:
    """Mark each conversation that exists paused, first answering the open tool
    calls of those whose runs ``were_running``."""
    if not were_running:
        return set_status_all(conn, conversation_ids, "paused", reason)
    status = status_event("paused", reason)
    update = ConversationUpdate(status="paused")
    written = []
    for cid in conversation_ids:
        # Locked before its tool events are read: another instance appending a
        # result meanwhile would otherwise have its call answered twice.
        if conn.execute(_LOCK, (cid,)).fetchone() is None:
            continue
        request = Append(cid, [*_tool_results(conn, cid, reason), status], update)
        write_append(conn, request)
        written.append(request)
    return written


def requeue(
    conn: psycopg.Connection, records: Sequence[ConversationRecord], reason: str
) -> tuple[list[ConversationRecord], list[Append]]:
    """Give each queued conversation a status event "queued" carrying ``reason``,
    keeping its place in the queue order; return the records as they now are,
    in the order given, and the appends made."""
    written = set_status_all(conn, [r.id for r in records], "queued", reason)
    return requeued_records(records, written), written
