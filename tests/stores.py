"""Helpers of the store tests, for either backend: opening stores, making
conversations and events, and reading what a store holds."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Sequence

import msgspec
import psycopg
import pytest

from laneway.models import AgentSpec, ConversationRecord, Event, NewEvent, Status, utc_now
from laneway.store import EventStore, PostgresEventStore, SQLiteEventStore, open_store


class StoreFactory:
    """Opens stores on one database; each call is another store, as another
    laneway process would open (for SQLite, once the previous one is closed)."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.opened: list[EventStore] = []

    @property
    def backend(self) -> str:
        return "sqlite" if not self.db.startswith("postgresql://") else "postgres"

    def __call__(self) -> EventStore:
        store = open_store(self.db)
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


def new_record(status: Status = "idle", title: str = "t") -> ConversationRecord:
    now = utc_now()
    return ConversationRecord(
        id=uuid.uuid4().hex,
        title=title,
        status=status,
        agent=AgentSpec("echo", {"n": 1}),
        max_steps=10,
        created_at=now,
        updated_at=now,
    )


def create(store: EventStore, status: Status = "idle", events: Sequence[NewEvent] = ()) -> str:
    record = new_record(status)
    if status == "queued":
        record = msgspec.structs.replace(record, queue_order=store.last_queue_order() + 1)
    store.create_conversation(record, events)
    return record.id


def msg(text: str, source: str = "user") -> NewEvent:
    return msgspec.convert({"kind": "message", "source": source, "data": {"text": text}}, NewEvent)


def tool(kind: str, call_id: str) -> NewEvent:
    data: dict[str, object] = {"call_id": call_id, "name": "probe"}
    if kind == "tool_result":
        data["output"] = 1
    return msgspec.convert({"kind": kind, "source": "tool", "data": data}, NewEvent)


def all_events(store: EventStore, cid: str) -> list[Event]:
    return store.events_after(cid, 0, 10_000)


def count_rows(store: EventStore, table: str) -> int:
    """Rows of a table no public method counts (tool notes, all events)."""
    assert isinstance(store, SQLiteEventStore | PostgresEventStore)
    with store._read() as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def set_clock(monkeypatch: pytest.MonkeyPatch, store: EventStore, clock: Callable[[], str]) -> None:
    """Make ``clock`` the time the store stamps its writes with."""
    module = "_sqlite_writer" if isinstance(store, SQLiteEventStore) else "_postgres_writes"
    monkeypatch.setattr(f"laneway.store.{module}.utc_now", clock)


def refuse_events_where(store: EventStore, condition: str) -> type[Exception]:
    """Make the database refuse, from now on, to insert an event for which the SQL
    ``condition`` on ``NEW`` holds; return the exception the store then raises."""
    if isinstance(store, SQLiteEventStore):
        # TEMP: on the writer's connection only, and gone with it.
        store._writer.conn.execute(
            f"CREATE TEMP TRIGGER refuse BEFORE INSERT ON events WHEN {condition} "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        return sqlite3.IntegrityError
    assert isinstance(store, PostgresEventStore)
    with store._transaction() as conn:
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF {condition} THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    return psycopg.errors.RaiseException
