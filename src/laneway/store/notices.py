"""What a :class:`~laneway.store.postgres.PostgresEventStore` announces to the
other laneway instances on its database: the events it has committed, and the
conversations it has deleted.

Each write that adds events, or deletes a conversation, sends a notice on
:data:`EVENTS_CHANNEL` with ``pg_notify`` inside its own transaction.
PostgreSQL delivers a notification when, and only if, its transaction commits,
so a listener told of a seq can read it from the store at once, and is never
told of a write that was rolled back.

A notice is one line of text, ``<instance> <conversation> <last seq>``, or
``<instance> <conversation> deleted``: far under PostgreSQL's 8,000 bytes,
and readable in ``pg_stat_activity`` and in a ``LISTEN`` in psql.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import psycopg

from laneway.store._append import Append

__all__ = [
    "EVENTS_CHANNEL",
    "EventsNotice",
    "check_instance_id",
    "notify_appended",
    "notify_deleted",
]

EVENTS_CHANNEL = "laneway_events"
_DELETED = "deleted"
_NOTIFY = "SELECT pg_notify(%s, %s)"
# Several notices in one round trip (recovery pauses or requeues many).
_NOTIFY_ALL = "SELECT pg_notify(%s, payload) FROM unnest(%s::text[]) AS payload"


class EventsNotice(msgspec.Struct, frozen=True):
    """Instance ``instance_id`` committed the events of a conversation up to
    ``last_seq``; or, with ``last_seq`` None, deleted it."""

    instance_id: str
    conversation_id: str
    last_seq: int | None

    @property
    def deleted(self) -> bool:
        return self.last_seq is None

    def payload(self) -> str:
        last = _DELETED if self.last_seq is None else str(self.last_seq)
        return f"{self.instance_id} {self.conversation_id} {last}"

    @classmethod
    def parse(cls, payload: str) -> EventsNotice | None:
        """The notice a payload carries; None for one that is not a notice (sent
        by hand, or by a laneway of another version)."""
        # Split from both ends: an instance id has no space (see check_instance_id),
        # and a conversation id, however it is made, is what lies between.
        instance_id, _, rest = payload.partition(" ")
        conversation_id, _, last = rest.rpartition(" ")
        if not instance_id or not conversation_id:
            return None
        if last == _DELETED:
            return cls(instance_id, conversation_id, None)
        if not last.isdigit():
            return None
        return cls(instance_id, conversation_id, int(last))


def check_instance_id(instance_id: str) -> str:
    """``instance_id`` if it can begin a notice: not empty, without whitespace."""
    if not instance_id or instance_id.split() != [instance_id]:
        raise ValueError(f"an instance id must be one word, not {instance_id!r}")
    return instance_id


def notify_appended(conn: psycopg.Connection, instance_id: str, appends: Iterable[Append]) -> None:
    """Announce, in the transaction ``conn`` holds, the committed ``appends``
    that added events; one notice per append, in one statement."""
    payloads = [
        EventsNotice(instance_id, a.conversation_id, a.first_seq + len(a.prepared) - 1).payload()
        for a in appends
        if a.prepared
    ]
    if len(payloads) == 1:
        conn.execute(_NOTIFY, (EVENTS_CHANNEL, payloads[0]))
    elif payloads:
        conn.execute(_NOTIFY_ALL, (EVENTS_CHANNEL, payloads))


def notify_deleted(conn: psycopg.Connection, instance_id: str, conversation_id: str) -> None:
    """Announce, in the transaction ``conn`` holds, that the conversation is deleted."""
    conn.execute(
        _NOTIFY, (EVENTS_CHANNEL, EventsNotice(instance_id, conversation_id, None).payload())
    )
