"""Rows to records and back, in the column order both SQL stores use: the
tables name their columns as the records name their fields."""

from __future__ import annotations

from typing import Any

import msgspec

from laneway.models import AgentSpec, ConversationRecord, Event, Order
from laneway.store._cursors import EventCursor, PageCursor, encode_cursor

# Columns in field order, so rows and records convert positionally.
CONVERSATION_FIELDS = tuple(field.name for field in msgspec.structs.fields(ConversationRecord))
CONVERSATION_COLUMNS = ", ".join(CONVERSATION_FIELDS)
EVENT_COLUMNS = "seq, id, timestamp, kind, source, data"

_decode_data = msgspec.json.Decoder(dict[str, Any]).decode
_decode_agent = msgspec.json.Decoder(AgentSpec).decode


def to_record(row: tuple[Any, ...]) -> ConversationRecord:
    cid, title, status, agent, *rest = row
    return ConversationRecord(cid, title, status, _decode_agent(agent), *rest)


def conversation_row(conversation: ConversationRecord, last_seq: int) -> list[Any]:
    """The values of CONVERSATION_COLUMNS for a new conversation."""
    row: list[Any] = list(msgspec.structs.astuple(conversation))
    row[CONVERSATION_FIELDS.index("agent")] = msgspec.json.encode(conversation.agent).decode()
    row[CONVERSATION_FIELDS.index("last_seq")] = last_seq
    return row


def to_event(conversation_id: str, row: tuple[Any, ...]) -> Event:
    seq, eid, timestamp, kind, source, data = row
    return Event(seq, eid, conversation_id, timestamp, kind, source, _decode_data(data))


def conversation_page(
    rows: list[tuple[Any, ...]], limit: int
) -> tuple[list[ConversationRecord], str | None]:
    """A listing's page from up to ``limit + 1`` rows of CONVERSATION_COLUMNS
    followed by pk: the extra row says another page follows."""
    page = [to_record(row[:-1]) for row in rows[:limit]]
    more = len(rows) > limit
    return page, encode_cursor(PageCursor(rows[limit - 1][-1])) if more else None


def event_page(
    conversation_id: str, rows: list[tuple[Any, ...]], order: Order, limit: int
) -> tuple[list[Event], str | None]:
    """A search's page from up to ``limit + 1`` rows of EVENT_COLUMNS."""
    page = [to_event(conversation_id, row) for row in rows[:limit]]
    more = len(rows) > limit
    return page, encode_cursor(EventCursor(page[-1].seq, order)) if more else None
