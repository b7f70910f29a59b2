"""Connections and the versioned schema of :class:`~laneway.store.sqlite.SQLiteEventStore`."""

from __future__ import annotations

import fcntl
import sqlite3
from typing import IO

from laneway.store._migrations import pending
from laneway.store.base import DatabaseInUse

# Migration N (1-based) brings a database from user_version N-1 to N. Append new
# migrations; never edit one that has shipped, since databases already carry it.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        # pk orders conversations newest first and anchors list cursors; an
        # INTEGER PRIMARY KEY is the rowid itself, so it costs no extra index.
        """
        CREATE TABLE conversations (
            pk INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            title TEXT NOT NULL,
            status TEXT NOT NULL,
            agent TEXT NOT NULL,
            max_steps INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            steps_done INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            last_seq INTEGER NOT NULL DEFAULT 0,
            read_seq INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX conversations_status ON conversations (status, pk)",
        # WITHOUT ROWID: the primary key is the table, so a seq lookup is one
        # b-tree search and every insert writes one b-tree fewer (page writes are
        # most of an append's cost). Rows over ~1 KB spill to overflow pages.
        """
        CREATE TABLE events (
            conversation_id TEXT NOT NULL
                REFERENCES conversations (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            id TEXT NOT NULL,
            timestamp TEXT NOT NULL,
            kind TEXT NOT NULL,
            source TEXT NOT NULL,
            data TEXT NOT NULL,
            text_cf TEXT,
            PRIMARY KEY (conversation_id, seq)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX events_kind ON events (conversation_id, kind, seq)",
        "CREATE INDEX events_source ON events (conversation_id, source, seq)",
        "CREATE INDEX events_timestamp ON events (conversation_id, timestamp)",
    ),
    (
        # Every index costs each append ~2 more WAL pages per commit (measured:
        # 9.6 -> 7.6 frames, +15% appends/s). Timestamps never decrease as seqs
        # grow, so a time range is a seq range, found by bisecting the primary key
        # (see _sqlite_query.seq_window).
        "DROP INDEX events_timestamp",
    ),
    (
        # One index for kind and source instead of one each: an append writes a
        # b-tree page fewer per conversation (measured: +8% appends/s). A search
        # on either alone merges the index's (kind, source) runs; see search_sql.
        "CREATE INDEX events_kind_source ON events (conversation_id, kind, source, seq)",
        "DROP INDEX events_kind",
        "DROP INDEX events_source",
    ),
    (
        # Tool calls begun and not yet answered (replaced by tool_waits below).
        """
        CREATE TABLE tool_starts (
            conversation_id TEXT NOT NULL
                REFERENCES conversations (id) ON DELETE CASCADE,
            call_id TEXT NOT NULL,
            PRIMARY KEY (conversation_id, call_id)
        ) WITHOUT ROWID
        """,
        # One row a write can always touch, to learn whether writes work again
        # after the disk refused one.
        """
        CREATE TABLE write_probe (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            written_at TEXT NOT NULL
        )
        """,
    ),
    (
        # Tool calls that had to wait for a tool token, until they begin: after a
        # crash, a call left without a result is "not run" if it is still here,
        # and "lost" (it may have run) if not. Calls that find a token free at
        # once, the usual case, cost no write, where tool_starts cost one per
        # call. Its rows were begun calls, which are "lost" here too.
        """
        CREATE TABLE tool_waits (
            conversation_id TEXT NOT NULL
                REFERENCES conversations (id) ON DELETE CASCADE,
            call_id TEXT NOT NULL,
            PRIMARY KEY (conversation_id, call_id)
        ) WITHOUT ROWID
        """,
        "DROP TABLE tool_starts",
    ),
    (
        # The order conversations entered the run queue in, so that a restart
        # queues them again in that order: each time a status becomes "queued",
        # it is written with the next number (see EventStore.append). No
        # index: it is read once, at startup, for the queued rows only, which
        # conversations_status finds and one sort orders; an index would cost
        # every admission a page write.
        "ALTER TABLE conversations ADD COLUMN queue_order INTEGER",
        # Runs a database of the previous version left queued had no number;
        # the time of their last write (the "queued" status, unless a message
        # came after it) is the best order their rows tell.
        """
        UPDATE conversations SET queue_order = queued.n
        FROM (
            SELECT pk, row_number() OVER (ORDER BY updated_at, pk) AS n
            FROM conversations WHERE status = 'queued'
        ) AS queued
        WHERE conversations.pk = queued.pk
        """,
    ),
    (
        # Tokens of the conversation's LLM steps, summed by the run that took them.
        "ALTER TABLE conversations ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE conversations ADD COLUMN completion_tokens INTEGER NOT NULL DEFAULT 0",
    ),
]

BUSY_TIMEOUT_MS = 10_000
WAL_CHECKPOINT_PAGES = 10_000
JOURNAL_LIMIT = 64 * 1024 * 1024


def is_memory(path: str) -> bool:
    # Each connection to these gets its own private database, so the store must
    # share one connection rather than open readers.
    return path in (":memory:", "")


def connect(path: str, *, reader: bool) -> sqlite3.Connection:
    # isolation_level=None: the store issues BEGIN/COMMIT itself, so the sqlite3
    # module never opens a transaction behind its back. check_same_thread=False:
    # the writer is shared under a lock, and close() closes readers from any thread.
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, cached_statements=512
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        # In WAL mode NORMAL never corrupts; a power cut may lose the last commits.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA temp_store = MEMORY")
        if reader:
            conn.execute("PRAGMA query_only = ON")
            return conn
        conn.execute("PRAGMA journal_mode = WAL")
        # The writer walks five b-trees per append; keep their upper levels cached.
        conn.execute("PRAGMA cache_size = -16000")
        # Checkpointing (with its fsyncs) every 1000 pages, the default, cost about
        # 15% of append throughput. 10000 pages is a WAL of ~40 MB under load; the
        # file is cut back to JOURNAL_LIMIT whenever the WAL is reset.
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_LIMIT}")
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations above the database's user_version; return the new version."""
    # IMMEDIATE takes the write lock before reading the version, so two processes
    # opening a new database at once cannot both run the same migration.
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        for number, statements in pending(version, MIGRATIONS):
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)


def claim(path: str) -> IO[bytes]:
    """Hold an exclusive lock on ``<path>.lock`` for as long as the store is open.

    The record cache and the timestamp floor are right only if this process
    makes every write, so a second laneway on the same file is refused at once
    rather than left to serve stale statuses.
    """
    lock = open(f"{path}.lock", "ab")  # noqa: SIM115 -- held until the store closes
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DatabaseInUse(f"{path} is in use by another laneway process") from None
    return lock
