"""Pausing runs that the process can no longer finish, at startup or shutdown,
and queueing again, at startup, the runs a crash left queued.

A run cut off mid-step may leave tool calls with no result: killed while they
ran, or before they could start. Every such call gets a result saying so, in
the same transaction as the pause, so that every ``tool_call`` in the log has
exactly one ``tool_result``: OpenAI-compatible providers refuse a history in
which a call has no answer. A call still noted as waiting for a tool token
(``tool_waits``) had not begun, and is "not run"; any other may have done its
work, and is "lost". (A call stored a moment before it is handed to the tool
lane is "lost" too: the word that claims less.)
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec

from laneway.models import ConversationRecord, ConversationUpdate, NewEvent, Status, status_event
from laneway.store._sqlite_writer import INSERT_EVENT, Append, Writer
from laneway.store.base import NotFound

_TOOL_EVENTS = (
    "SELECT kind, data FROM events WHERE conversation_id = ?"
    " AND kind IN ('tool_call', 'tool_result') ORDER BY seq"
)
_WAITING = "SELECT call_id FROM tool_waits WHERE conversation_id = ?"
_FORGET_WAITING = "DELETE FROM tool_waits WHERE conversation_id = ?"
_SET_STATUS_ALL = (
    "UPDATE conversations SET last_seq = last_seq + 1, updated_at = ?, status = ?"
    " WHERE id IN (SELECT value FROM json_each(?)) RETURNING id, last_seq"
)
_decode = msgspec.json.Decoder(dict[str, Any]).decode


def unanswered_tool_calls(conn: sqlite3.Connection, conversation_id: str) -> list[dict[str, Any]]:
    """The data of each tool call of the conversation that has no result yet."""
    calls: list[dict[str, Any]] = []
    answers: Counter[str] = Counter()
    for kind, data in conn.execute(_TOOL_EVENTS, (conversation_id,)):
        decoded = _decode(data)
        if kind == "tool_call":
            calls.append(decoded)
        else:
            answers[str(decoded.get("call_id"))] += 1
    open_calls = []
    for call in calls:
        call_id = str(call.get("call_id"))
        if answers[call_id]:
            answers[call_id] -= 1
        else:
            open_calls.append(call)
    return open_calls


def tool_results_for(conn: sqlite3.Connection, conversation_id: str, reason: str) -> list[NewEvent]:
    """A result for each unanswered call: "not run: <reason>" if it was still
    waiting for a tool token, else "lost: <reason>"; its notes go."""
    waiting = {row[0] for row in conn.execute(_WAITING, (conversation_id,))}
    conn.execute(_FORGET_WAITING, (conversation_id,))
    results = []
    for call in unanswered_tool_calls(conn, conversation_id):
        call_id = str(call.get("call_id"))
        fate = "not run" if call_id in waiting else "lost"
        data = {"call_id": call_id, "name": call.get("name"), "error": f"{fate}: {reason}"}
        results.append(NewEvent("tool_result", "tool", data))
    return results


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
    by_id = {request.conversation_id: request for request in written}
    requeued = [
        msgspec.structs.replace(
            record, last_seq=by_id[record.id].first_seq, updated_at=by_id[record.id].now
        )
        for record in records
    ]
    return requeued, written


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
