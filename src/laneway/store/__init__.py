"""Event storage: the :class:`EventStore` interface and its SQLite implementation."""

from laneway.store.base import EventStore, NotFound
from laneway.store.sqlite import DatabaseInUse, SQLiteEventStore

__all__ = ["DatabaseInUse", "EventStore", "NotFound", "SQLiteEventStore"]
