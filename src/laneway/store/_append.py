"""One append of events, prepared before any lock is taken: ids, JSON and the
casefolded text. Whichever store commits it fills in its first seq and its time.
Shared by the SQLite and PostgreSQL stores, whose events are the same rows."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import msgspec

from laneway.models import ConversationUpdate, Event, EventKind, EventSource, NewEvent

_encode = msgspec.json.encode
_decode_data = msgspec.json.Decoder(dict[str, Any]).decode
_ID_BYTES = 16

# An event ready to insert but for its seq and timestamp, which need the lock.
Prepared = tuple[str, EventKind, EventSource, str, str | None]


def prepare(events: Sequence[NewEvent]) -> list[Prepared]:
    # 128 random bits per id, as in a uuid4; one urandom call for the whole batch.
    ids = os.urandom(_ID_BYTES * len(events)).hex()
    prepared = []
    for index, event in enumerate(events):
        text = event.data.get("text") if event.kind == "message" else None
        text_cf = text.casefold() if isinstance(text, str) else None
        eid = ids[2 * _ID_BYTES * index : 2 * _ID_BYTES * (index + 1)]
        prepared.append((eid, event.kind, event.source, _encode(event.data).decode(), text_cf))
    return prepared


class Append:
    """One append; the thread that commits it fills in the outcome (the SQLite
    writer commits several together, hence ``done`` and ``error``)."""

    __slots__ = (
        "begun",
        "conversation_id",
        "done",
        "error",
        "first_seq",
        "now",
        "prepared",
        "update",
        "waiting",
    )

    def __init__(
        self,
        conversation_id: str,
        events: Sequence[NewEvent],
        update: ConversationUpdate | None,
        *,
        waiting: Sequence[str] = (),
        begun: Sequence[str] = (),
    ) -> None:
        self.conversation_id = conversation_id
        self.prepared = prepare(events)
        self.update = update
        # Tool calls noted as waiting for a tool token, and noted ones that have
        # begun since: after a crash, a call still noted had never begun.
        self.waiting = waiting
        self.begun = begun
        self.done = False
        self.error: BaseException | None = None
        self.first_seq = 0
        self.now = ""

    @property
    def changes_conversation(self) -> bool:
        return bool(self.prepared) or self.update is not None

    def rows(self) -> list[tuple[Any, ...]]:
        """Its events as rows of the events table, once its seqs and time are set."""
        cid, now = self.conversation_id, self.now
        return [
            (cid, seq, eid, now, kind, source, data, text_cf)
            for seq, (eid, kind, source, data, text_cf) in enumerate(self.prepared, self.first_seq)
        ]

    def stored(self) -> list[Event]:
        # Decoding the stored JSON (not reusing the caller's dict) gives the caller
        # exactly what a later read returns, and no object it might mutate. Done
        # outside the write lock, which only the inserts need.
        cid, now = self.conversation_id, self.now
        return [
            Event(seq, eid, cid, now, kind, source, _decode_data(data))
            for seq, (eid, kind, source, data, _) in enumerate(self.prepared, self.first_seq)
        ]
