"""Waiting for a run to end when any instance may be running it.

No handle of the run is at hand here, so a wait watches the conversation's
stored row instead: the run has ended once the conversation is neither queued
nor running and no instance holds it. Its lease is released in the same
transaction that queues the conversation again when it must go on (a message
it left unread, a hand-over), so a wait never sees an end that is not one.

The wait holds no thread: it wakes on each event published for the
conversation (those of other instances come through the relay) and reads the
row then; and, since a release publishes nothing, it reads it again every
:data:`RECHECK_S` while the row says ended but still held.
"""

from __future__ import annotations

import psycopg

from laneway.cluster.queue import status_and_owner
from laneway.models import ACTIVE_STATUSES

RECHECK_S = 0.05
# A notification lost while a connection was down must not leave a wait
# asleep until its timeout.
IDLE_RECHECK_S = 1.0


def settled(conn: psycopg.Connection, conversation_id: str) -> tuple[bool, bool]:
    """(ended, held): the conversation is neither queued nor running; and an
    instance still holds it. Raises NotFound."""
    status, owner = status_and_owner(conn, conversation_id)
    return status not in ACTIVE_STATUSES, owner is not None
