"""The versioned schema of :class:`~laneway.store.postgres.PostgresEventStore`.

Several laneway instances may start on one database at once; each applies the
migrations it lacks inside one transaction that first takes an advisory lock,
so the others wait, then find the version already current and apply nothing.
DDL is transactional in PostgreSQL: a migration that fails leaves nothing.
"""

from __future__ import annotations

import psycopg

from laneway.store._migrations import pending

# Migration N (1-based) brings a database from version N-1 to N. Append new
# migrations; never edit one that has shipped, since databases already carry it.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        # The columns and their meaning follow the SQLite store's schema as it
        # stands at its seventh version (see _sqlite_schema), so the same rows
        # and the same SQL-independent code serve both. Timestamps are RFC 3339
        # text (models.format_timestamp), compared bytewise ("C"), whatever the
        # database's locale. last_stamp is the newest stamp given to the
        # conversation's events (see _postgres_writes).
        """
        CREATE TABLE conversations (
            pk BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            title TEXT NOT NULL,
            status TEXT NOT NULL,
            agent TEXT NOT NULL,
            max_steps BIGINT NOT NULL,
            created_at TEXT COLLATE "C" NOT NULL,
            updated_at TEXT COLLATE "C" NOT NULL,
            steps_done BIGINT NOT NULL DEFAULT 0,
            last_error TEXT,
            last_seq BIGINT NOT NULL DEFAULT 0,
            read_seq BIGINT NOT NULL DEFAULT 0,
            queue_order BIGINT,
            prompt_tokens BIGINT NOT NULL DEFAULT 0,
            completion_tokens BIGINT NOT NULL DEFAULT 0,
            last_stamp TEXT COLLATE "C" NOT NULL
        )
        """,
        "CREATE INDEX conversations_status ON conversations (status, pk)",
        # data is the JSON text the store encoded, not jsonb: what a read
        # returns is byte for byte what the append returned, and jsonb would
        # refuse the \u0000 a message may hold. text_cf is the message text
        # casefolded in Python, as SQLite's is (so "STRASSE" finds "straße"),
        # kept as UTF-8 bytes since a text column cannot hold NUL.
        """
        CREATE TABLE events (
            conversation_id TEXT NOT NULL
                REFERENCES conversations (id) ON DELETE CASCADE,
            seq BIGINT NOT NULL,
            id TEXT NOT NULL,
            timestamp TEXT COLLATE "C" NOT NULL,
            kind TEXT NOT NULL,
            source TEXT NOT NULL,
            data TEXT NOT NULL,
            text_cf BYTEA,
            PRIMARY KEY (conversation_id, seq)
        )
        """,
        "CREATE INDEX events_kind_source ON events (conversation_id, kind, source, seq)",
        # Tool calls that had to wait for a tool token, until they begin (see
        # _recovery).
        """
        CREATE TABLE tool_waits (
            conversation_id TEXT NOT NULL
                REFERENCES conversations (id) ON DELETE CASCADE,
            call_id TEXT NOT NULL,
            PRIMARY KEY (conversation_id, call_id)
        )
        """,
        # One row a write can always touch, to learn whether writes work again.
        """
        CREATE TABLE write_probe (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            written_at TEXT NOT NULL
        )
        """,
    ),
    (
        # Leases (see laneway.cluster): the instance that owns a conversation's
        # run, until when, and the fencing number its writes must carry, one
        # more for every new owner. control is a pause or interrupt asked of
        # the owner, kept until its run ends, so that an owner which missed
        # the notification still finds it at its next heartbeat. run_wanted_seq
        # is the newest message that asked for a run: one its run ended without
        # reading gets a run of its own when that run's lease is released.
        """
        ALTER TABLE conversations
            ADD COLUMN owner TEXT,
            ADD COLUMN lease_expires TIMESTAMPTZ,
            ADD COLUMN fence BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN control TEXT,
            ADD COLUMN run_wanted_seq BIGINT NOT NULL DEFAULT 0
        """,
        # The run queue shared by every instance: queued and taken by none.
        """
        CREATE INDEX conversations_run_queue ON conversations (queue_order, pk)
            WHERE status = 'queued' AND owner IS NULL
        """,
        "CREATE INDEX conversations_owner ON conversations (owner) WHERE owner IS NOT NULL",
        # Places in the queue order, given by the database since any instance
        # may queue a run; started above any a single process gave before.
        "CREATE SEQUENCE queue_orders",
        """
        SELECT setval('queue_orders', coalesce((SELECT max(queue_order) FROM conversations), 0) + 1,
                      false)
        """,
        # Live instances, each renewing its row at every heartbeat; lanes is the
        # JSON of its lanes' snapshot then.
        """
        CREATE TABLE instances (
            id TEXT PRIMARY KEY,
            role TEXT NOT NULL,
            started_at TEXT NOT NULL,
            heartbeat_at TIMESTAMPTZ NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL,
            lanes TEXT NOT NULL,
            runs BIGINT NOT NULL
        )
        """,
    ),
    (
        # Conversations whose deltas someone follows on an instance, until the
        # row expires unrenewed (see laneway.cluster.deltas).
        """
        CREATE TABLE delta_followers (
            conversation_id TEXT NOT NULL,
            instance_id TEXT NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (conversation_id, instance_id)
        )
        """,
    ),
]

# The advisory lock that serializes migrations: any number, the same in every
# laneway ("lane" in ASCII).
MIGRATION_LOCK = 0x6C616E65


def migrate(conn: psycopg.Connection) -> int:
    """Apply the migrations above the database's version; return the new version."""
    with conn.transaction():
        # Held until the transaction ends: another instance starting now waits
        # here, then reads the version this one wrote.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS laneway_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM laneway_schema").fetchone()
        version = 0 if row is None else int(row[0])
        for _, statements in pending(version, MIGRATIONS):
            for statement in statements:
                conn.execute(statement)
        if row is None:
            conn.execute("INSERT INTO laneway_schema (version) VALUES (%s)", (len(MIGRATIONS),))
        else:
            conn.execute("UPDATE laneway_schema SET version = %s", (len(MIGRATIONS),))
    return len(MIGRATIONS)
