"""Leases: the one instance that runs a conversation, until when, and the
fencing number its writes carry, inside transactions the caller holds.

An instance takes waiting runs from the shared queue with ``FOR UPDATE SKIP
LOCKED``, so instances taking at once never take the same run nor wait for
each other. Taking a run sets its owner and adds one to its fencing number;
every write the run makes carries both (see ``write_append``), so once
another instance has taken the run over, or it has ended and been released,
nothing its old owner writes is stored.

An owner renews all its leases in one statement per heartbeat. A lease that
has expired is never renewed: the run is lost to its owner even if no other
instance has noticed yet, so an owner cut off for longer than the TTL always
finds, when it comes back, that its runs are no longer its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import psycopg

from laneway.cluster.queue import WAITING_WHERE, announce, enqueue
from laneway.lifecycle.table import INTERRUPT_REASON, PAUSE_REASON
from laneway.models import ConversationRecord, ConversationUpdate, status_event
from laneway.store._append import Append
from laneway.store._postgres_recovery import pause, tool_events
from laneway.store._postgres_writes import write_append
from laneway.store._recovery import unanswered_tool_calls
from laneway.store._rows import CONVERSATION_COLUMNS, to_record
from laneway.store.notices import notify_appended

OWNER_LOST_IN_TOOLS = "owner lost during tool calls"
OWNER_LOST = "owner lost"
# A run paused by an instance that stops, queued for another to go on with.
HANDED_OVER = "handed over by a stopping instance"
# Expired leases settled per heartbeat at most: a large backlog (a big
# instance killed) is worked through over several, each transaction short.
REAP_BATCH = 100

_LEASE = "now() + make_interval(secs => %s)"
_CLAIM = (
    f"UPDATE conversations SET owner = %s, fence = fence + 1, lease_expires = {_LEASE},"
    f" control = NULL WHERE pk IN (SELECT pk FROM conversations WHERE {WAITING_WHERE}"
    " ORDER BY queue_order, pk LIMIT %s FOR UPDATE SKIP LOCKED)"
    f" RETURNING {CONVERSATION_COLUMNS}, fence"
)
# The instance's row and its leases in one statement: a heartbeat is one
# round trip, whatever the number of runs.
_RENEW = (
    "WITH me AS (INSERT INTO instances"
    " (id, role, started_at, heartbeat_at, expires_at, lanes, runs)"
    f" VALUES (%s, %s, %s, now(), {_LEASE}, %s, %s)"
    " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,"
    " expires_at = excluded.expires_at, lanes = excluded.lanes, runs = excluded.runs)"
    f" UPDATE conversations SET lease_expires = {_LEASE}"
    " WHERE owner = %s AND id = ANY(%s) AND lease_expires > now()"
    " RETURNING id, fence, control"
)
_HELD = (
    "SELECT status, run_wanted_seq > read_seq FROM conversations"
    " WHERE id = %s AND owner = %s AND fence = %s FOR UPDATE"
)
_EXPIRED = (
    "SELECT id, status, queue_order, control FROM conversations"
    " WHERE (owner IS NOT NULL AND lease_expires < now())"
    " OR (status = 'running' AND owner IS NULL)"
    " ORDER BY pk LIMIT %s FOR UPDATE SKIP LOCKED"
)
_DISOWN = (
    "UPDATE conversations SET owner = NULL, lease_expires = NULL, control = NULL WHERE id = ANY(%s)"
)
_PRUNE_INSTANCES = "DELETE FROM instances WHERE expires_at < now() - interval '1 hour'"
_FORGET_INSTANCE = "DELETE FROM instances WHERE id = %s"


class Lease(msgspec.Struct, frozen=True):
    owner: str
    fence: int
    # The run's place in the queue order, kept should it be queued again.
    queue_order: int | None = None

    def key(self) -> tuple[str, int]:
        return (self.owner, self.fence)


class Renewal(msgspec.Struct, frozen=True):
    """The leases a heartbeat renewed (fencing number by conversation id), and
    the controls stored for them (see :mod:`laneway.cluster.controls`)."""

    fences: dict[str, int]
    controls: dict[str, str]


class Settled(msgspec.Struct):
    """What :func:`settle_expired` did: the appends it made, by what they did."""

    requeued: list[Append]
    paused: list[Append]
    released: list[str]


def claim(
    conn: psycopg.Connection, owner: str, ttl_s: float, count: int
) -> list[tuple[ConversationRecord, Lease]]:
    """Take up to ``count`` waiting runs, the first in the queue first."""
    rows = conn.execute(_CLAIM, (owner, ttl_s, count)).fetchall()
    records = [to_record(row[:-1]) for row in rows]
    taken = [
        (record, Lease(owner, int(row[-1]), record.queue_order))
        for record, row in zip(records, rows, strict=True)
    ]
    # RETURNING follows no order: the queue's own is restored.
    taken.sort(key=lambda pair: (pair[0].queue_order or 0, pair[0].created_at))
    return taken


def renew(
    conn: psycopg.Connection,
    owner: str,
    ttl_s: float,
    held: Sequence[str],
    *,
    role: str,
    started_at: str,
    lanes: str,
    runs: int,
) -> Renewal:
    """Renew the instance's row and the leases on the runs it ``held`` as the
    heartbeat began: only those, so that a lease this instance dropped (a run
    it stopped, a release that failed) expires, and its run is settled."""
    rows = conn.execute(
        _RENEW, (owner, role, started_at, ttl_s, lanes, runs, ttl_s, owner, list(held))
    ).fetchall()
    return Renewal(
        fences={cid: int(fence) for cid, fence, _ in rows},
        controls={cid: control for cid, _, control in rows if control is not None},
    )


def release(conn: psycopg.Connection, conversation_id: str, lease: Lease) -> Append | None:
    """Give the run's lease up once it has ended. If a message that asked for a
    run came after the last one its run read (see the migration's
    run_wanted_seq), queue a run for it, returning what that stored."""
    row = conn.execute(_HELD, (conversation_id, *lease.key())).fetchone()
    if row is None:
        return None
    status, wanted = row
    conn.execute(_DISOWN, ([conversation_id],))
    if status == "queued":
        # Handed over: waiting for another instance now (see Member.hand_over).
        announce(conn)
        return None
    if not wanted or status == "running":
        return None
    # Admitted already, with the message: the queue's bound does not refuse it.
    admission = enqueue(conn, conversation_id, (), max_waiting=2**62, by=lease.owner)
    return admission.written[0] if admission.written else None


def forget_instance(conn: psycopg.Connection, instance_id: str) -> None:
    conn.execute(_FORGET_INSTANCE, (instance_id,))


def settle_expired(conn: psycopg.Connection, *, by: str) -> Settled:
    """Settle up to REAP_BATCH runs whose owners' leases expired: a run taken
    but not begun, or whose last step ended cleanly, is queued again at its old
    place and goes on from there; one whose last step has tool calls without
    results is paused, those calls answered as lost, as they may have had
    effects; one asked to pause or to stop is paused. An ended run's lease is
    just released."""
    rows = conn.execute(_EXPIRED, (REAP_BATCH,)).fetchall()
    settled = Settled([], [], [])
    for cid, status, queue_order, control in rows:
        if status == "running":
            open_calls = unanswered_tool_calls(tool_events(conn, cid))
            if open_calls or control is not None:
                reason = _stopped_reason(control) if not open_calls else OWNER_LOST_IN_TOOLS
                settled.paused += pause(conn, [cid], reason, were_running=True)
                continue
            update = ConversationUpdate(status="queued", queue_order=queue_order)
            request = Append(cid, [status_event("queued", OWNER_LOST)], update)
            write_append(conn, request)
            settled.requeued.append(request)
        else:
            settled.released.append(cid)
    notify_appended(conn, by, [*settled.requeued, *settled.paused])
    conn.execute(_DISOWN, ([row[0] for row in rows],))
    if rows:
        conn.execute(_PRUNE_INSTANCES)
    return settled


def _stopped_reason(control: str | None) -> str:
    return INTERRUPT_REASON if control == "interrupt" else PAUSE_REASON


def lost(held: dict[str, int], renewed: dict[str, int]) -> Sequence[str]:
    """The runs held here whose leases the heartbeat did not renew."""
    return [cid for cid, fence in held.items() if renewed.get(cid) != fence]
