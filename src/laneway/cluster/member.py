"""This instance as one of several on a PostgreSQL database: its heartbeat, the
runs it takes from the shared queue, and the leases it holds on them.

The heartbeat renews the instance's row and all its leases in one statement,
then settles the runs of instances whose leases expired. It runs in a thread
of its own, not on the io lane: a full io lane must never cost an instance its
leases. A heartbeat that cannot reach the database is abandoned after one
interval, and once the last renewal is a TTL old every run held here is lost:
another instance may have taken it by now, and no write it makes would be
stored anyway (see :mod:`laneway.cluster.leases`).

Runs are taken only while the run lane has free tokens, as many as it has, so
each process stays bounded by its lanes while the queue is global.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from laneway.broker import EventBroker
from laneway.cluster import deltas, leases
from laneway.cluster.controls import Control
from laneway.cluster.deltas import DeltaCourier
from laneway.cluster.leases import Lease, Renewal
from laneway.cluster.queue import announce
from laneway.cluster.settings import ClusterSettings
from laneway.errors import ShuttingDown
from laneway.lanes import LaneFull, Lanes
from laneway.lifecycle import (
    Accepted,
    Deleted,
    InterruptAsked,
    MessageStored,
    PauseAsked,
    Phase,
    owed,
)
from laneway.models import ConversationUpdate, Event, NewEvent, status_event, utc_now
from laneway.runner import RunWrite
from laneway.runs import Runs
from laneway.store._append import Append
from laneway.store.base import StoreUnavailable
from laneway.store.postgres import PostgresEventStore

log = logging.getLogger("laneway.cluster")

T = TypeVar("T")
# How long the instance waits for a notification of a queued run before it
# looks at the queue anyway: notifications are lost while a connection is down.
POLL_S = 1.0


class Member:
    """Implements :class:`~laneway.runner.RunLeases` for the service's runs;
    :meth:`serve` runs its background work."""

    def __init__(
        self,
        store: PostgresEventStore,
        lanes: Lanes,
        broker: EventBroker,
        settings: ClusterSettings,
    ) -> None:
        self.store = store
        self.lanes = lanes
        self.broker = broker
        self.settings = settings
        self.id = store.instance_id
        self.started_at = utc_now()
        # Leases held, by conversation id; changed on the loop only.
        self.held: dict[str, Lease] = {}
        # The control last applied to each run held (see _apply).
        self._applied: dict[str, str] = {}
        # Controls that came before their run was started here (see control).
        self._early: dict[str, str] = {}
        # Runs to queue again as they end, for another instance (see hand_over).
        self._handing_over: set[str] = set()
        self.deltas = DeltaCourier(store)
        self._runs: Runs | None = None
        self._tg: TaskGroup | None = None
        self._wake: anyio.Event | None = None
        # The heartbeat's own thread; see the module's docstring.
        self._heartbeat_limiter = anyio.CapacityLimiter(1)
        # Until when the leases held here hold, by the loop's clock: a TTL
        # after the last renewal that succeeded was sent.
        self._deadline = math.inf

    # -- RunLeases -------------------------------------------------------------

    def write_for(self, conversation_id: str) -> RunWrite | None:
        lease = self.held.get(conversation_id)
        if lease is None:
            return None
        # Status events carry the lease: the log shows which owner wrote what.
        marked = {"owner": lease.owner, "fence": lease.fence}

        def write(
            cid: str, events: Sequence[NewEvent], update: ConversationUpdate | None
        ) -> list[Event]:
            if cid in self._handing_over and update is not None and update.status == "paused":
                events, update = _handed_over(events, update, lease)
            events = [_with_lease(event, marked) for event in events]
            return self.store.append_fenced(cid, events, update, lease=lease.key())

        return write

    def emit_delta(self, conversation_id: str, step: int, text: str) -> None:
        self.deltas.emit(conversation_id, step, text)

    def ended(self, conversation_id: str) -> None:
        self._applied.pop(conversation_id, None)
        self._early.pop(conversation_id, None)
        self.deltas.forget(conversation_id)
        lease = self.held.pop(conversation_id, None)
        self._handing_over.discard(conversation_id)
        if lease is not None and self._tg is not None:
            self._tg.start_soon(self._release, conversation_id, lease)
        self.wake()

    def hand_over(self) -> None:
        """This instance is stopping: the runs it holds that nobody asked to stop
        are queued again, rather than paused, as they stop at their next step,
        for another instance to go on with. One write, so that no client sees
        a pause that is not one."""
        if self._runs is None:
            return
        self._handing_over = {
            cid
            for cid, handle in self._runs.handles.items()
            if cid in self.held and handle.state.pause is None and cid not in self._applied
        }

    # -- background work -------------------------------------------------------

    async def serve(self, runs: Runs, *, task_status: TaskStatus[None]) -> None:
        """Heartbeats and, in a role that takes runs, taking them; until cancelled."""
        self._runs = runs
        self._wake = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                # The first heartbeat registers the instance before it serves.
                await self._heartbeat()
                tg.start_soon(self._heartbeats)
                if self.settings.takes_runs:
                    tg.start_soon(self._take_runs, runs)
                task_status.started()
        finally:
            self._tg = None

    def wake(self) -> None:
        """Look at the queue now: a run was queued, or a token came free."""
        if self._wake is not None:
            self._wake.set()

    async def leave(self) -> None:
        """Remove the instance's row, as it stops."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.settings.interval_s):
            try:
                await self._in_thread(in_transaction, self.store, leases.forget_instance, self.id)
            except StoreUnavailable as exc:
                log.warning("instance %s: its row stays until it expires: %s", self.id, exc)

    async def _heartbeats(self) -> None:
        interval = self.settings.interval_s
        while True:
            await anyio.sleep(interval)
            await self._heartbeat()

    async def _heartbeat(self) -> None:
        sent = anyio.current_time()
        # What was held as the renewal was sent: a run taken meanwhile may have
        # committed after it, and is not lost for missing from its answer.
        held = {cid: lease.fence for cid, lease in self.held.items()}
        # Read on the loop, which alone changes the lanes.
        lanes = msgspec.json.encode(self.lanes.snapshot()).decode()
        wanted = [cid for cid in self.broker.followed() if self.broker.wants_deltas(cid)]
        renew = functools.partial(self._renew, list(held), lanes, self.lanes.run.running, wanted)
        renewal: Renewal | None = None
        with anyio.move_on_after(self.settings.interval_s):
            try:
                renewal = await self._in_thread(renew)
            except StoreUnavailable as exc:
                log.warning("instance %s: heartbeat failed: %s", self.id, exc)
        if renewal is not None:
            self._deadline = sent + self.settings.lease_ttl_s
            self._apply(held, renewal)
        elif anyio.current_time() >= self._deadline and self.held:
            log.error("instance %s: leases expired unrenewed; its runs stop", self.id)
            for cid in list(self.held):
                self._lose(cid)
        with anyio.move_on_after(self.settings.interval_s):
            try:
                settled = await self._in_thread(self._settle)
            except StoreUnavailable as exc:
                log.warning("instance %s: settling expired leases failed: %s", self.id, exc)
                return
            for request in [*settled.requeued, *settled.paused]:
                self.broker.publish(request.conversation_id, request.stored())
            if settled.requeued or settled.released:
                self.wake()

    def _renew(self, held: list[str], lanes: str, running: int, wanted: list[str]) -> Renewal:
        with self.store.transaction() as conn:
            deltas.want(conn, wanted, self.id, self.settings.lease_ttl_s)
            return leases.renew(
                conn,
                self.id,
                self.settings.lease_ttl_s,
                held,
                role=self.settings.role,
                started_at=self.started_at,
                lanes=lanes,
                runs=running,
            )

    def _settle(self) -> leases.Settled:
        with self.store.transaction() as conn:
            settled = leases.settle_expired(conn, by=self.id)
            deltas.prune(conn)
            if settled.requeued or settled.released:
                announce(conn)
        for request in [*settled.requeued, *settled.paused]:
            log.warning("run %s: owner lost: %s", request.conversation_id, _status(request))
        return settled

    def _apply(self, held: dict[str, int], renewal: Renewal) -> None:
        for cid in leases.lost(held, renewal.fences):
            # Unless it ended, and was released, meanwhile.
            if (lease := self.held.get(cid)) is not None and lease.fence == held[cid]:
                self._lose(cid)
        for cid, control in renewal.controls.items():
            self.control(cid, control)

    def applied(self, conversation_id: str, control: str) -> None:
        """A control this instance applied to its run itself: the heartbeat's
        copy from the row is not applied again."""
        self._applied[conversation_id] = control

    def control(self, conversation_id: str, control: str) -> None:
        """Apply a pause or an interrupt asked of a run held here, once. One
        asked of a run this instance has taken but not yet started is applied
        as it starts (see _take_runs)."""
        if self._runs is None or self._applied.get(conversation_id) == control:
            return
        handle = self._runs.handles.get(conversation_id)
        if conversation_id not in self.held or handle is None:
            self._early[conversation_id] = control
            return
        self._early.pop(conversation_id, None)
        self._applied[conversation_id] = control
        handle.fire(InterruptAsked() if control == "interrupt" else PauseAsked())

    def on_control(self, control: Control) -> None:
        """Act on a control sent on :data:`~controls.CONTROL_CHANNEL`; call on the loop."""
        cid = control.conversation_id
        if control.owner != self.id or self._runs is None:
            return
        if control.action in ("pause", "interrupt"):
            self.control(cid, control.action)
            return
        handle = self._runs.handles.get(cid)
        if handle is None:
            return
        if control.action == "delete":
            handle.fire(Deleted())
            self._runs.forget_conversation(cid)
            return
        # A message: the run reads it (its answer Accepted), or, ending without
        # reading it, queues another as it releases its lease.
        accepted = owed(handle.fire(MessageStored(control.seq)), Accepted)
        if accepted and control.action == "interrupt_message" and handle.phase is Phase.RUNNING:
            handle.fire(InterruptAsked(resume=True))

    def _lose(self, conversation_id: str) -> None:
        """The run's lease is gone: it stops now, and stores nothing more."""
        log.warning("run %s: lease lost; another instance goes on with it", conversation_id)
        self.held.pop(conversation_id, None)
        handle = self._runs.handles.get(conversation_id) if self._runs is not None else None
        if handle is not None:
            # As if deleted here: its step is cancelled and nothing it wrote
            # from now on would be stored; the conversation goes on elsewhere.
            handle.fire(Deleted())

    async def _release(self, conversation_id: str, lease: Lease) -> None:
        with anyio.CancelScope(shield=True):
            try:
                release = functools.partial(in_transaction, self.store, leases.release)
                queued = await self.lanes.io.run_sync_patiently(release, conversation_id, lease)
            except StoreUnavailable as exc:
                # It expires by itself, and another instance settles the run.
                log.warning("run %s: lease not released: %s", conversation_id, exc)
                return
        if queued is not None:
            self.broker.publish(conversation_id, queued.stored())
            self.wake()

    async def _take_runs(self, runs: Runs) -> None:
        while True:
            with anyio.move_on_after(POLL_S):
                assert self._wake is not None
                await self._wake.wait()
            self._wake = anyio.Event()
            while runs.admitting and (free := self.lanes.run.free_tokens()) > 0:
                try:
                    taken = await self.lanes.io.run_sync(
                        functools.partial(in_transaction, self.store),
                        leases.claim,
                        self.id,
                        self.settings.lease_ttl_s,
                        free,
                    )
                except (StoreUnavailable, LaneFull) as exc:
                    log.warning("instance %s: cannot take runs now: %s", self.id, exc)
                    break
                if not taken:
                    break
                for record, lease in taken:
                    self.held[record.id] = lease
                    try:
                        await runs.start(record, queued_stored=True)
                    except (LaneFull, ShuttingDown):
                        self.ended(record.id)
                    if (early := self._early.pop(record.id, None)) is not None:
                        self.control(record.id, early)

    # -- helpers -----------------------------------------------------------------

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(
            fn, *args, limiter=self._heartbeat_limiter, abandon_on_cancel=True
        )


def in_transaction(store: PostgresEventStore, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(conn, *args, **kwargs)`` in one transaction of the store's."""
    with store.transaction() as conn:
        return fn(conn, *args, **kwargs)


def _handed_over(
    events: Sequence[NewEvent], update: ConversationUpdate, lease: Lease
) -> tuple[list[NewEvent], ConversationUpdate]:
    """A stopping instance's pause of a run, as the run queued again instead."""
    queued = status_event("queued", leases.HANDED_OVER)
    kept = [e for e in events if not (e.kind == "status" and e.data.get("status") == "paused")]
    return [*kept, queued], msgspec.structs.replace(
        update, status="queued", queue_order=lease.queue_order
    )


def _with_lease(event: NewEvent, lease: dict[str, Any]) -> NewEvent:
    if event.kind != "status":
        return event
    return msgspec.structs.replace(event, data={**event.data, "lease": lease})


def _status(request: Append) -> str:
    update = request.update
    return update.status if update is not None and isinstance(update.status, str) else "?"
