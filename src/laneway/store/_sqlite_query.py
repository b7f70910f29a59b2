"""SQL building and opaque cursors for :class:`~laneway.store.sqlite.SQLiteEventStore`."""

from __future__ import annotations

import base64
import sqlite3
from typing import Annotated, Any, TypeVar

import msgspec

from laneway.models import EventFilter, InvalidCursor, Order

# A cursor is client input: bounded to SQLite's integers, so a forged one is an
# InvalidCursor rather than an overflow inside the driver.
_Int64 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class PageCursor(msgspec.Struct, forbid_unknown_fields=True):
    """Where a conversation listing continues: below this pk."""

    r: _Int64


class EventCursor(msgspec.Struct, forbid_unknown_fields=True):
    """Where an event search continues: past seq ``s`` in order ``o``."""

    s: _Int64
    o: Order


_C = TypeVar("_C", PageCursor, EventCursor)


def encode_cursor(cursor: PageCursor | EventCursor) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).rstrip(b"=").decode()


def decode_cursor(text: str, kind: type[_C]) -> _C:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return msgspec.json.decode(raw, type=kind)
    except (ValueError, msgspec.DecodeError) as exc:
        raise InvalidCursor(f"invalid cursor {text!r}") from exc


def event_where(conversation_id: str, flt: EventFilter) -> tuple[str, list[Any]]:
    """The WHERE clause (without the keyword) and parameters for ``flt``."""
    clauses = ["conversation_id = ?"]
    params: list[Any] = [conversation_id]
    if flt.kind is not None:
        clauses.append("kind = ?")
        params.append(flt.kind)
    if flt.source is not None:
        clauses.append("source = ?")
        params.append(flt.source)
    if flt.text is not None:
        if flt.kind is None:
            # Only messages carry text; saying so lets the kind index narrow the search.
            clauses.append("kind = 'message'")
        clauses.append("instr(text_cf, ?) > 0")
        params.append(flt.text.casefold())
    for value, clause in (
        (flt.after_seq, "seq > ?"),
        (flt.before_seq, "seq < ?"),
        (flt.since, "timestamp >= ?"),
        (flt.until, "timestamp <= ?"),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return " AND ".join(clauses), params


def seq_window(conn: sqlite3.Connection, conversation_id: str, flt: EventFilter) -> EventFilter:
    """``flt`` with its seq bounds narrowed to the seqs of its time range.

    The store never lets timestamps decrease as seqs grow, so the events of a
    time range are a run of seqs, found by bisecting the primary key. The time
    predicates stay in the query: bounds read from an older snapshot than the
    query's can only widen what it scans, never drop a match.
    """
    if flt.since is None and flt.until is None:
        return flt
    (last,) = conn.execute(
        "SELECT coalesce(max(seq), 0) FROM events WHERE conversation_id = ?", (conversation_id,)
    ).fetchone()

    def first_seq(after: str, *, inclusive: bool) -> int | None:
        """The first seq stamped at ``after`` or later (or strictly later); last + 1
        if none. None if an event vanished meanwhile (its conversation deleted)."""
        lo, hi = 1, last + 1
        while lo < hi:
            mid = (lo + hi) // 2
            row = conn.execute(
                "SELECT timestamp FROM events WHERE conversation_id = ? AND seq = ?",
                (conversation_id, mid),
            ).fetchone()
            if row is None:
                return None
            if row[0] > after or (inclusive and row[0] == after):
                hi = mid
            else:
                lo = mid + 1
        return lo

    after_seq, before_seq = flt.after_seq, flt.before_seq
    if flt.since is not None:
        found = first_seq(flt.since, inclusive=True)
        if found is None:
            return flt
        after_seq = found - 1 if after_seq is None else max(after_seq, found - 1)
    if flt.until is not None:
        found = first_seq(flt.until, inclusive=False)
        if found is None:
            return flt
        before_seq = found if before_seq is None else min(before_seq, found)
    return msgspec.structs.replace(flt, after_seq=after_seq, before_seq=before_seq)


def search_sql(
    columns: str,
    conversation_id: str,
    flt: EventFilter,
    order: Order,
    limit: int,
    cursor: str | None,
) -> tuple[str, list[Any]]:
    """A query for one page of a search, with one row more to tell if another follows."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    where, params = event_where(conversation_id, flt)
    if cursor is not None:
        position = decode_cursor(cursor, EventCursor)
        if position.o != order:
            raise InvalidCursor(f"cursor {cursor!r} is for {position.o} order, not {order}")
        where += " AND seq > ?" if order == "asc" else " AND seq < ?"
        params.append(position.s)
    params.append(limit + 1)
    direction = "ASC" if order == "asc" else "DESC"
    return f"SELECT {columns} FROM events WHERE {where} ORDER BY seq {direction} LIMIT ?", params
