"""Event storage: the :class:`EventStore` interface, its SQLite and PostgreSQL
implementations, and :func:`open_store`, which picks one from ``--db``."""

from laneway.store.base import DatabaseInUse, EventStore, NotFound
from laneway.store.postgres import PostgresEventStore
from laneway.store.sqlite import SQLiteEventStore

__all__ = [
    "DatabaseInUse",
    "EventStore",
    "NotFound",
    "PostgresEventStore",
    "SQLiteEventStore",
    "is_postgres",
    "open_store",
]

# libpq's two URL schemes; anything else is a SQLite path.
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(db: str) -> bool:
    return db.startswith(_POSTGRES_SCHEMES)


def open_store(db: str) -> EventStore:
    """The store ``db`` names: a PostgreSQL URL, else a SQLite file (or ``:memory:``)."""
    if is_postgres(db):
        return PostgresEventStore(db)
    return SQLiteEventStore(db)
