"""The stuck watchdog: a step running past ``step_timeout_s`` marks its run
``stuck``; the run ends when the step finally returns (see
:class:`~laneway.runhandle.StuckStep` for who writes the status).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import TYPE_CHECKING

import anyio

from laneway.models import ConversationUpdate, Event, status_event
from laneway.runhandle import StuckStep
from laneway.runner import RunWrite
from laneway.store.base import LeaseLost, NotFound, StoreUnavailable
from laneway.toolcalls import Spawn

if TYPE_CHECKING:
    from laneway.runs import Runs

log = logging.getLogger("laneway.runs")


async def watch_stuck_steps(runs: Runs, spawn: Spawn) -> None:
    """Look for steps running past ``step_timeout_s`` (every second, or a quarter
    of the timeout if that is shorter) and mark their runs stuck; runs for the
    service's life."""
    interval = min(1.0, runs.step_timeout_s / 4)
    while True:
        await anyio.sleep(interval)
        for handle in list(runs.handles.values()):
            stuck = handle.check_stuck(runs.step_timeout_s)
            if stuck is not None:
                spawn(_mark_stuck, runs, handle.conversation_id, stuck)


async def _mark_stuck(runs: Runs, conversation_id: str, stuck: StuckStep) -> None:
    log.warning("run %s stuck: %s", conversation_id, stuck.reason)

    # Under a lease, written with it, as the run's own writes are; not at all
    # once the lease is gone.
    append: RunWrite = runs.store.append
    if runs.leases is not None:
        leased = runs.leases.write_for(conversation_id)
        if leased is None:
            return
        append = leased

    def write() -> list[Event]:
        # None: the step returned first, and its run wrote the status.
        return stuck.write(functools.partial(append, conversation_id)) or []

    # As Runs._write_status, but the write is claimed only once it is under way.
    with anyio.CancelScope(shield=True), contextlib.suppress(NotFound, LeaseLost):
        try:
            stored = await runs.lanes.io.run_sync_patiently(write)
        except StoreUnavailable as exc:
            if runs.leases is not None:
                # Not owed: written later, it could land after a takeover. The
                # lease, left to expire, has the run settled.
                return
            update = ConversationUpdate(status="stuck")
            runs.owed.owe(conversation_id, [status_event("stuck", stuck.reason)], update, str(exc))
            return
        runs.broker.publish(conversation_id, stored)
