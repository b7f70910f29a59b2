"""The reads both SQL stores make with the same SQL, but for the parameter
placeholder (``?`` in SQLite, ``%s`` in psycopg): conversation listings and
counts, and single events and the events after a seq."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from laneway.models import STATUSES, ConversationRecord, Event, Status
from laneway.store._cursors import PageCursor, decode_cursor
from laneway.store._rows import CONVERSATION_COLUMNS, EVENT_COLUMNS, conversation_page, to_event

_MAX_PK = 2**63 - 1


class SQLReads(ABC):
    """Mixed into a store that gives its placeholder and a connection to read on
    (sqlite3's and psycopg's both run ``execute(sql, params)``)."""

    placeholder: ClassVar[str]

    @abstractmethod
    def _read(self) -> AbstractContextManager[Any]: ...

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self.placeholder)

    def list_conversations(
        self, *, status: Status | None, limit: int, cursor: str | None
    ) -> tuple[list[ConversationRecord], str | None]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        before = _MAX_PK if cursor is None else decode_cursor(cursor, PageCursor).r
        where = "pk < ?" if status is None else "status = ? AND pk < ?"
        params = (before, limit + 1) if status is None else (status, before, limit + 1)
        sql = (
            f"SELECT {CONVERSATION_COLUMNS}, pk FROM conversations WHERE {where} "
            "ORDER BY pk DESC LIMIT ?"
        )
        with self._read() as conn:
            rows = conn.execute(self._sql(sql), params).fetchall()
        return conversation_page(rows, limit)

    def count_conversations(self, *, status: Status | None) -> int:
        with self._read() as conn:
            if status is None:
                row = conn.execute("SELECT count(*) FROM conversations").fetchone()
            else:
                sql = self._sql("SELECT count(*) FROM conversations WHERE status = ?")
                row = conn.execute(sql, (status,)).fetchone()
        return int(row[0])

    def count_by_status(self) -> dict[Status, int]:
        with self._read() as conn:
            rows = conn.execute("SELECT status, count(*) FROM conversations GROUP BY status")
            found = dict(rows.fetchall())
        return {status: found.get(status, 0) for status in STATUSES}

    def get_event(self, conversation_id: str, seq: int) -> Event | None:
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE conversation_id = ? AND seq = ?"
        with self._read() as conn:
            row = conn.execute(self._sql(sql), (conversation_id, seq)).fetchone()
        return None if row is None else to_event(conversation_id, row)

    def events_after(self, conversation_id: str, after_seq: int, limit: int) -> list[Event]:
        sql = (
            f"SELECT {EVENT_COLUMNS} FROM events WHERE conversation_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?"
        )
        with self._read() as conn:
            rows = conn.execute(self._sql(sql), (conversation_id, after_seq, limit)).fetchall()
        return [to_event(conversation_id, row) for row in rows]
