"""Opaque pagination cursors, the same for every store."""

from __future__ import annotations

import base64
from typing import Annotated, TypeVar

import msgspec

from laneway.models import InvalidCursor, Order

# A cursor is client input: bounded to the databases' signed 64-bit integers,
# so a forged one is an InvalidCursor rather than an overflow inside the driver.
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


def search_page(
    cursor: str | None, order: Order, limit: int, placeholder: str
) -> tuple[str, list[int], str]:
    """The parts of an event search's SQL that a page adds, the same in every
    store: the bound past the seq ``cursor`` continues from (a clause to AND to
    the filters, and its parameter; none from the start), and the ordering and
    LIMIT tail, whose parameter the caller gives last. Checks that ``cursor``
    was issued for a search in this ``order``."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    tail = f" ORDER BY seq {'ASC' if order == 'asc' else 'DESC'} LIMIT {placeholder}"
    if cursor is None:
        return "", [], tail
    position = decode_cursor(cursor, EventCursor)
    if position.o != order:
        raise InvalidCursor(f"cursor {cursor!r} is for {position.o} order, not {order}")
    bound = f" AND seq {'>' if order == 'asc' else '<'} {placeholder}"
    return bound, [position.s], tail
