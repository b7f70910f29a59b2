"""SQL building for :class:`~laneway.store.sqlite.SQLiteEventStore`."""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from laneway.models import (
    EVENT_KINDS,
    EVENT_SOURCES,
    EventFilter,
    EventKind,
    Order,
)
from laneway.store._cursors import search_page


def _kinds(flt: EventFilter) -> tuple[EventKind, ...] | None:
    """The kinds ``flt``'s matches can have; None if any, and no index is needed."""
    if flt.kind is not None:
        return (flt.kind,)
    if flt.text is not None:
        # Only messages carry text; saying so lets the index narrow the search.
        return ("message",)
    if flt.source is not None:
        # The index leads with kind, so naming every kind is what lets it find a source.
        return EVENT_KINDS
    return None


def _narrowing(flt: EventFilter) -> tuple[str, list[Any]]:
    """The AND-ed clauses of ``flt`` other than the conversation, kind and source."""
    clauses = ""
    params: list[Any] = []
    for value, clause in (
        (None if flt.text is None else flt.text.casefold(), "instr(text_cf, ?) > 0"),
        (flt.after_seq, "seq > ?"),
        (flt.before_seq, "seq < ?"),
        (flt.since, "timestamp >= ?"),
        (flt.until, "timestamp <= ?"),
    ):
        if value is not None:
            clauses += f" AND {clause}"
            params.append(value)
    return clauses, params


def event_where(conversation_id: str, flt: EventFilter) -> tuple[str, list[Any]]:
    """The WHERE clause (without the keyword) and parameters for ``flt``."""
    where = "conversation_id = ?"
    params: list[Any] = [conversation_id]
    kinds = _kinds(flt)
    if kinds is not None:
        where += f" AND kind IN ({', '.join('?' * len(kinds))})"
        params.extend(kinds)
    if flt.source is not None:
        where += " AND source = ?"
        params.append(flt.source)
    narrowing, narrowing_params = _narrowing(flt)
    return where + narrowing, params + narrowing_params


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
    bound, bound_params, tail = search_page(cursor, order, limit, "?")
    narrowing, narrowing_params = _narrowing(flt)
    narrowing += bound
    narrowing_params += bound_params
    kinds = _kinds(flt)
    if kinds is None:
        sql = f"SELECT {columns} FROM events WHERE conversation_id = ?{narrowing}{tail}"
        return sql, [conversation_id, *narrowing_params, limit + 1]
    # The index holds each (kind, source) pair's events in seq order, and SQLite
    # merges the arms of an ordered UNION ALL without sorting; a single query
    # with IN lists would sort every match to return the first few.
    sources = EVENT_SOURCES if flt.source is None else (flt.source,)
    arm = (
        f"SELECT {columns} FROM events"
        f" WHERE conversation_id = ? AND kind = ? AND source = ?{narrowing}"
    )
    arms: list[str] = []
    params: list[Any] = []
    for kind in kinds:
        for source in sources:
            arms.append(arm)
            params += [conversation_id, kind, source, *narrowing_params]
    return " UNION ALL ".join(arms) + tail, [*params, limit + 1]
