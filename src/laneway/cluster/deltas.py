"""Deltas across instances: a step's text as it streams, from the instance
running the step to followers on the others.

Deltas are not stored, so the relay of events cannot carry them. An instance
where someone follows a conversation's deltas says so in ``delta_followers``
(at once, and again at each heartbeat while they follow); the instance running
the conversation looks there, at most once a second per conversation, and
while anyone elsewhere wants them, sends each delta as a notification on
:data:`DELTAS_CHANNEL`, from the run's thread, before the step's events are
written: notifications arrive in the order they were committed, so a
follower's deltas still come before the message that ends their step. Best
effort, as deltas are: one the database cannot take is dropped.

Payload: ``<instance> <conversation id> <step> <text>``, a long text in pieces.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import msgspec
import psycopg

from laneway.store.base import StoreUnavailable
from laneway.store.postgres import PostgresEventStore

DELTAS_CHANNEL = "laneway_deltas"
# How long an answer to "does anyone elsewhere want these deltas" is kept.
CHECK_EVERY_S = 1.0
# A notification's payload is under 8000 bytes; a character is at most 4.
PIECE_CHARS = 1500

_WANT = (
    "INSERT INTO delta_followers (conversation_id, instance_id, expires_at)"
    " SELECT cid, %s, now() + make_interval(secs => %s) FROM unnest(%s::text[]) AS cid"
    " ON CONFLICT (conversation_id, instance_id) DO UPDATE SET expires_at = excluded.expires_at"
)
_WANTED = (
    "SELECT EXISTS (SELECT 1 FROM delta_followers WHERE conversation_id = %s"
    " AND instance_id <> %s AND expires_at > now())"
)
_PRUNE = "DELETE FROM delta_followers WHERE expires_at < now() - interval '1 minute'"
_NOTIFY = "SELECT pg_notify(%s, %s)"


class Delta(msgspec.Struct, frozen=True):
    instance_id: str
    conversation_id: str
    step: int
    text: str

    def payloads(self) -> list[str]:
        head = f"{self.instance_id} {self.conversation_id} {self.step} "
        text = self.text
        return [head + text[i : i + PIECE_CHARS] for i in range(0, len(text), PIECE_CHARS)]


def parse(payload: str) -> Delta | None:
    parts = payload.split(" ", 3)
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    instance_id, cid, step, text = parts
    return Delta(instance_id, cid, int(step), text)


def want(
    conn: psycopg.Connection, conversation_ids: Sequence[str], instance_id: str, ttl_s: float
) -> None:
    """Say that followers here want these conversations' deltas, for ``ttl_s``."""
    if conversation_ids:
        conn.execute(_WANT, (instance_id, ttl_s, list(conversation_ids)))


def prune(conn: psycopg.Connection) -> None:
    conn.execute(_PRUNE)


class DeltaCourier:
    """Sends the deltas of runs held here to other instances that want them;
    called from run threads."""

    def __init__(self, store: PostgresEventStore) -> None:
        self.store = store
        # By conversation: until when the last answer holds, and the answer.
        self._wanted: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def emit(self, conversation_id: str, step: int, text: str) -> None:
        if not text or not self._wanted_elsewhere(conversation_id):
            return
        delta = Delta(self.store.instance_id, conversation_id, step, text)
        try:
            with self.store.reading() as conn:
                for payload in delta.payloads():
                    conn.execute(_NOTIFY, (DELTAS_CHANNEL, payload))
        except StoreUnavailable:
            pass  # best effort, as deltas are

    def forget(self, conversation_id: str) -> None:
        with self._lock:
            self._wanted.pop(conversation_id, None)

    def _wanted_elsewhere(self, conversation_id: str) -> bool:
        now = time.monotonic()
        with self._lock:
            known = self._wanted.get(conversation_id)
        if known is not None and known[0] > now:
            return known[1]
        try:
            with self.store.reading() as conn:
                row = conn.execute(_WANTED, (conversation_id, self.store.instance_id)).fetchone()
        except StoreUnavailable:
            row = None
        wanted = bool(row and row[0])
        with self._lock:
            self._wanted[conversation_id] = (now + CHECK_EVERY_S, wanted)
        return wanted
