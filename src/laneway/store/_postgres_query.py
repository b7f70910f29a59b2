"""SQL building for :class:`~laneway.store.postgres.PostgresEventStore`'s searches.

No plan tricks as in :mod:`laneway.store._sqlite_query`: PostgreSQL walks the
primary key (conversation, seq) in either direction, or events_kind_source
for a kind, and stops at the page's end. Time bounds are compared directly:
stamps never go backwards within a conversation (see _postgres_writes).
"""

from __future__ import annotations

from typing import Any

from laneway.models import EventFilter, Order
from laneway.store._cursors import search_page


def event_where(conversation_id: str, flt: EventFilter) -> tuple[str, list[Any]]:
    """The WHERE clause (without the keyword) and parameters for ``flt``."""
    where = "conversation_id = %s"
    params: list[Any] = [conversation_id]
    # text_cf is set for messages only, so a text filter needs no kind of its own.
    text = None if flt.text is None else flt.text.casefold().encode()
    for value, clause in (
        (flt.kind, "kind = %s"),
        (flt.source, "source = %s"),
        (text, "position(%s::bytea IN text_cf) > 0"),
        (flt.after_seq, "seq > %s"),
        (flt.before_seq, "seq < %s"),
        (flt.since, "timestamp >= %s"),
        (flt.until, "timestamp <= %s"),
    ):
        if value is not None:
            where += f" AND {clause}"
            params.append(value)
    return where, params


def search_sql(
    columns: str,
    conversation_id: str,
    flt: EventFilter,
    order: Order,
    limit: int,
    cursor: str | None,
) -> tuple[str, list[Any]]:
    """A query for one page of a search, with one row more to tell if another follows."""
    bound, bound_params, tail = search_page(cursor, order, limit, "%s")
    where, params = event_where(conversation_id, flt)
    sql = f"SELECT {columns} FROM events WHERE {where}{bound}{tail}"
    return sql, [*params, *bound_params, limit + 1]
