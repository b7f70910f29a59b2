"""Checkpoints of the SQLite WAL, made off the write path."""

from __future__ import annotations

import logging
import sqlite3
import threading

from laneway.store._sqlite_schema import connect

logger = logging.getLogger(__name__)


class Checkpointer:
    """Copies the WAL into the database file on a thread of its own.

    Left to the writer, a checkpoint runs inside a commit once the WAL reaches
    ``wal_autocheckpoint`` pages, and every append waits while it copies them and
    syncs both files: about a fifth of the time spent appending for ten busy
    conversations. A passive checkpoint runs alongside the writer and the
    readers instead. The writer's own checkpoint still runs at that size, since
    only one made while nothing is written can catch up fully and let the WAL
    start over, but by then most pages are copied already.
    """

    def __init__(self, path: str, every_events: int) -> None:
        self._conn = connect(path, reader=True)
        self._every = every_events
        self._pending = 0
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="laneway-checkpoint", daemon=True)
        self._thread.start()

    def wrote(self, events: int) -> None:
        """Count events committed, and wake the thread once enough have been;
        call under the store's write lock."""
        self._pending += events
        if self._pending >= self._every:
            self._pending = 0
            self._wake.set()

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._closing:
                    return
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    # The writer's own checkpoints still bound the WAL. A full disk
                    # fails this too, and is reported by the writes themselves.
                    logger.warning("background WAL checkpoint failed: %s", exc)
        finally:
            self._conn.close()

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join()
