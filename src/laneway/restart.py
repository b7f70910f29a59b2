"""What a start makes of the runs a stopped process left in the store.

A run left ``running`` becomes ``paused``: its step may have had effects (a
tool call sent, a message half written), so it is not run again unasked. A
run left ``queued`` had not begun, and is queued again, in its queue order,
which is the order the run lane held the queued runs in. After a clean
shutdown none is left (shutdown pauses them); a kill, a crash or a power cut
leaves them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import msgspec

from laneway.lanes import LaneFull, Lanes
from laneway.models import ConversationRecord
from laneway.runs import Runs
from laneway.store.base import EventStore, Recovery

log = logging.getLogger("laneway.runs")

RESTART_REASON = "interrupted by restart"
REQUEUE_REASON = "requeued after restart"
# For a run queued before the restart that the run queue, bounded smaller now,
# cannot hold.
NOT_REQUEUED_REASON = "run queue full at restart"


async def settle(store: EventStore, lanes: Lanes) -> Recovery:
    """Pause the runs left running and keep queued as many of those left queued
    as the run lane has room for, in one write; the rest are paused."""
    recover = functools.partial(
        store.recover_interrupted,
        RESTART_REASON,
        # Taken before the io call, which in shared mode holds a token of the
        # pool the run lane draws on.
        room=lanes.run.room(),
        requeue_reason=REQUEUE_REASON,
        full_reason=NOT_REQUEUED_REASON,
    )
    recovery = await lanes.io.run_sync(recover)
    for cid in recovery.paused:
        log.info("run %s paused: %s", cid, RESTART_REASON)
    if recovery.not_requeued:
        log.warning("%d queued runs paused: %s", len(recovery.not_requeued), NOT_REQUEUED_REASON)
    return recovery


async def requeue(runs: Runs, records: Sequence[ConversationRecord]) -> None:
    """Queue again, in their order, the runs :func:`settle` kept queued: one at
    a time, each in the run lane before the next starts. Runs reserved after
    them are numbered after the largest place they hold (see
    :meth:`EventStore.last_queue_order`), so they keep coming after them.

    They were admitted before, so the run queue's bound does not refuse them:
    the store kept only as many as the run lane had room for, and nothing else
    is queued before the server takes requests.
    """
    for record in records:
        # A refused run is put back to the record's status: paused, as a
        # restart leaves any run it does not go on with.
        before = msgspec.structs.replace(record, status="paused")
        try:
            await runs.start(before, queued_stored=True)
        except LaneFull:
            log.exception("run %s not requeued", record.id)
    if records:
        log.info("%d queued runs %s", len(records), REQUEUE_REASON)
