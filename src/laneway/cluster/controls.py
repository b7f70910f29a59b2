"""Asking a run held by another instance to pause, to stop, to read a message
or to go, inside transactions the caller holds.

Each request is a notification on :data:`CONTROL_CHANNEL`, sent when its
transaction commits, that the owner acts on at once. A pause or an interrupt
is also kept in the run's row until the run ends, since a notification sent
while the owner's listening connection was down is lost: its next heartbeat
finds it (see leases.renew). A message needs no such copy: its run reads it
at its next step anyway, or, ending without reading it, queues another run
as it releases its lease (see queue.enqueue).

Payload: ``<owner> <conversation id> <action> [<seq>]``.
"""

from __future__ import annotations

from typing import Literal

import msgspec
import psycopg

from laneway.cluster.queue import leave, status_and_owner
from laneway.lifecycle.table import INTERRUPT_REASON, QUEUED_REASON
from laneway.models import ACTIVE_STATUSES
from laneway.store._append import Append
from laneway.store.notices import notify_deleted

CONTROL_CHANNEL = "laneway_control"
Action = Literal["pause", "interrupt", "message", "interrupt_message", "delete"]
ACTIONS: tuple[Action, ...] = ("pause", "interrupt", "message", "interrupt_message", "delete")

# An interrupt asked already is not weakened to a pause by a later request.
_KEEP = (
    "UPDATE conversations SET control = CASE WHEN control = 'interrupt' THEN control"
    " ELSE %s END WHERE id = %s"
)
_DELETE = "DELETE FROM conversations WHERE id = %s RETURNING owner"
_OWNER = "SELECT owner FROM conversations WHERE id = %s AND status IN ('queued', 'running')"


class Control(msgspec.Struct, frozen=True):
    owner: str
    conversation_id: str
    action: Action
    seq: int = 0

    def payload(self) -> str:
        return f"{self.owner} {self.conversation_id} {self.action} {self.seq}"


def parse(payload: str) -> Control | None:
    """The control a payload carries; None for one this laneway does not know."""
    parts = payload.split()
    if len(parts) != 4 or parts[2] not in ACTIONS or not parts[3].isdigit():
        return None
    owner, cid, action, seq = parts
    return Control(owner, cid, action, int(seq))  # type: ignore[arg-type]


def send(conn: psycopg.Connection, control: Control) -> None:
    conn.execute("SELECT pg_notify(%s, %s)", (CONTROL_CHANNEL, control.payload()))


class Asked(msgspec.Struct, frozen=True):
    """What asking a run to stop did: took it out of the queue (the pause
    written), or asked its owner, or found no run."""

    left: Append | None = None
    owner: str | None = None


def ask_to_stop(
    conn: psycopg.Connection,
    conversation_id: str,
    action: Literal["pause", "interrupt"],
    *,
    by: str,
) -> Asked:
    """Pause or interrupt the conversation's run, wherever it is, for the
    instance ``by``. Raises NotFound."""
    status, owner = status_and_owner(conn, conversation_id, lock=True)
    if status not in ACTIVE_STATUSES:
        return Asked()
    if owner is None:
        reason = QUEUED_REASON if action == "pause" else INTERRUPT_REASON
        return Asked(left=leave(conn, conversation_id, reason, by=by))
    conn.execute(_KEEP, (action, conversation_id))
    if owner != by:
        # An instance asking of a run it holds acts on it itself.
        send(conn, Control(owner, conversation_id, action))
    return Asked(owner=owner)


def delete(conn: psycopg.Connection, conversation_id: str, instance_id: str) -> bool:
    """Delete a conversation: every instance ends its streams of it (see the
    relay), and the one running it stops the run now."""
    row = conn.execute(_DELETE, (conversation_id,)).fetchone()
    if row is None:
        return False
    notify_deleted(conn, instance_id, conversation_id)
    if row[0] is not None:
        send(conn, Control(row[0], conversation_id, "delete"))
    return True


def running_owner(conn: psycopg.Connection, conversation_id: str) -> str | None:
    """The instance holding the conversation's run, if one does."""
    row = conn.execute(_OWNER, (conversation_id,)).fetchone()
    return None if row is None else row[0]
