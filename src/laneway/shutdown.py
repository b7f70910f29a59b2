"""Pausing every run when the server stops.

Queued runs leave the queue at once and are paused in one write; running runs
are asked to pause at their next step, and waited for until the deadline (the
grace period after the signal). A run still stepping then is left behind: its
thread is no longer waited for, and it is marked paused ("interrupted by
shutdown"), with at most :data:`FINAL_WRITES_S` more for those writes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import TYPE_CHECKING

import anyio

from laneway.lifecycle import QUEUED_REASON, GraceExpired, JoinShutdownBatch, ShutdownBegan
from laneway.store.base import StoreUnavailable

if TYPE_CHECKING:
    from laneway.runs import Runs

log = logging.getLogger("laneway.runs")

SHUTDOWN_REASON = "interrupted by shutdown"
# Past the grace period, how long shutdown may still wait to store the pauses of
# the runs it leaves behind (and any status owed), should the io lane be full.
FINAL_WRITES_S = 1.0


async def pause_all(runs: Runs, deadline: float) -> None:
    """Pause every run, wait until ``deadline``, then leave behind (marked
    paused in the store) any run whose step will not return."""
    queued = [
        handle.conversation_id
        for handle in list(runs.handles.values())
        if JoinShutdownBatch() in handle.fire(ShutdownBegan())
    ]
    with anyio.CancelScope(deadline=deadline):
        if runs.leases is None:
            # Under leases they stay queued, in the shared queue, for another
            # instance: each gives its lease up as it leaves.
            await _mark_paused(runs, queued, QUEUED_REASON)
        for handle in list(runs.handles.values()):
            await handle.done.wait()
    left_behind = [h for h in runs.handles.values() if not h.done.is_set()]
    for handle in left_behind:
        handle.fire(GraceExpired())
    # What could not be written by now is left to the restart, which pauses
    # every run still "queued" or "running".
    with anyio.move_on_after(FINAL_WRITES_S), contextlib.suppress(StoreUnavailable):
        await _mark_paused(
            runs, [h.conversation_id for h in left_behind], SHUTDOWN_REASON, were_running=True
        )
        await runs.owed.settle_all()


async def _mark_paused(
    runs: Runs, conversation_ids: list[str], reason: str, *, were_running: bool = False
) -> None:
    """Pause many runs in one io call: one each could overflow the io lane's
    queue, since the run queue may be far longer. Conversations deleted
    meanwhile are skipped."""
    if not conversation_ids:
        return
    try:
        stored = await runs.lanes.io.run_sync_patiently(
            functools.partial(runs.store.mark_paused, were_running=were_running),
            conversation_ids,
            reason,
        )
    except StoreUnavailable as exc:
        log.error("%d runs not marked paused (a restart will): %s", len(conversation_ids), exc)
        return
    for cid, events in stored.items():
        runs.broker.publish(cid, events)
