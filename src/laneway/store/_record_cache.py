"""Recently used conversation records, kept in step with the store's commits.

Reading a conversation is the most frequent request, and answering it from
memory saves a trip to a worker thread, which costs twenty times the read.
The cache is right only because one store in one process makes every write:
each commit updates or drops the records it changed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import msgspec

from laneway.models import ConversationRecord, ConversationUpdate


class RecordCache:
    """A bounded, least-recently-used map of conversation id to record.

    Safe to use from any thread, the event loop's included: the lock guards only
    dictionary operations, never I/O.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._records: OrderedDict[str, ConversationRecord] = OrderedDict()
        self._lock = threading.Lock()
        # Counts changes, so that a record read from the database is cached only
        # if no commit landed while it was read (it might predate that commit).
        self._generation = 0

    def __len__(self) -> int:
        return len(self._records)

    def get(self, conversation_id: str) -> ConversationRecord | None:
        with self._lock:
            record = self._records.get(conversation_id)
            if record is not None:
                self._records.move_to_end(conversation_id)
            return record

    @property
    def generation(self) -> int:
        """Take this before reading a record from the database; pass it to :meth:`fill`."""
        return self._generation

    def fill(self, record: ConversationRecord, generation: int) -> None:
        """Cache a record read from the database, unless a commit came since ``generation``."""
        with self._lock:
            if generation == self._generation:
                self._insert(record)

    def put(self, record: ConversationRecord) -> None:
        """Cache a record just committed."""
        with self._lock:
            self._generation += 1
            self._insert(record)

    def update(
        self,
        conversation_id: str,
        *,
        last_seq: int,
        updated_at: str,
        update: ConversationUpdate | None,
    ) -> None:
        """Apply a committed append. The values are absolute, so applying one to a
        record that already holds it changes nothing."""
        with self._lock:
            self._generation += 1
            record = self._records.get(conversation_id)
            if record is None:
                return
            changes = update.changes() if update is not None else {}
            changes.update(last_seq=last_seq, updated_at=updated_at)
            self._records[conversation_id] = msgspec.structs.replace(record, **changes)

    def discard(self, conversation_id: str) -> None:
        """Forget a conversation that a commit deleted."""
        with self._lock:
            self._generation += 1
            self._records.pop(conversation_id, None)

    def _insert(self, record: ConversationRecord) -> None:
        self._records[record.id] = record
        self._records.move_to_end(record.id)
        while len(self._records) > self.capacity:
            self._records.popitem(last=False)
