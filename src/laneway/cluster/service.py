"""The conversation service of one instance among several on a PostgreSQL
database: runs queue in the database, this instance runs those it takes
under leases (see :mod:`laneway.cluster.member`), and a run held elsewhere
is paused, interrupted or handed a message through its owner.

Startup settles nothing: a run another instance holds is that instance's, and
the runs of an instance that stopped are settled when their leases expire.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.lowlevel
import msgspec

from laneway.agents import Agent
from laneway.broker import EventBroker
from laneway.cluster import controls, deltas
from laneway.cluster.controls import CONTROL_CHANNEL
from laneway.cluster.deltas import DELTAS_CHANNEL
from laneway.cluster.instances import Instance
from laneway.cluster.listener import Listener
from laneway.cluster.member import Member
from laneway.cluster.queue import QUEUE_CHANNEL
from laneway.cluster.relay import StreamRelay
from laneway.cluster.settings import ClusterSettings
from laneway.cluster.shared import SharedRuns
from laneway.cluster.waits import IDLE_RECHECK_S, RECHECK_S
from laneway.errors import RunNotAdmitted
from laneway.fromthread import call_soon
from laneway.lanes import LaneFull, Lanes
from laneway.lifecycle import InterruptAsked, PauseAsked
from laneway.models import (
    Conversation,
    ConversationRecord,
    Event,
    IfRunning,
    NewEvent,
    Status,
)
from laneway.runhandle import RunHandle
from laneway.service import ConversationService
from laneway.store.base import EventStore, StoreUnavailable
from laneway.store.postgres import PostgresEventStore
from laneway.subscriptions import Follower

log = logging.getLogger("laneway.cluster")


class SharedConversationService(ConversationService):
    def __init__(
        self,
        store: PostgresEventStore,
        lanes: Lanes,
        *,
        cluster: ClusterSettings,
        broker: EventBroker | None = None,
        **kwargs: Any,
    ) -> None:
        broker = broker if broker is not None else EventBroker()
        self.member = Member(store, lanes, broker, cluster)
        super().__init__(store, lanes, broker=broker, leases=self.member, **kwargs)
        self.shared = SharedRuns(store, lanes, broker, self.member)
        self._joined = contextlib.AsyncExitStack()

    async def _start_runs(self) -> None:
        # The member's task group encloses the runs' (their scopes nest): it
        # takes runs only once they admit, and renews their leases until the
        # last has stopped.
        try:
            await self._listen()
            tg = await self._joined.enter_async_context(anyio.create_task_group())
            self._joined.callback(tg.cancel_scope.cancel)
            self._joined.push_async_callback(self.member.leave)
            await tg.start(self.member.serve, self.runs)
            await self.runs.__aenter__()
        except BaseException:
            await self._leave()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            # Runs stop (and give their leases up) while the heartbeat still
            # renews what they hold.
            return await super().__aexit__(exc_type, exc, tb)
        finally:
            await self._leave()

    async def _listen(self) -> None:
        """Hear the other instances: their events, for the followers here (the
        relay); runs they queued; and controls for runs held here."""
        token = anyio.lowlevel.current_token()
        member = self.member
        listener = Listener(self.member.store.url)
        relay = StreamRelay(self.store, self.lanes.io, self.broker, member.id, listener)

        def on_control(payload: str) -> None:
            control = controls.parse(payload)
            if control is not None:
                call_soon(token, member.on_control, control)

        # A notification lost while the connection was down: the queue is looked
        # at again now, and controls are found at the next heartbeat.
        def on_delta(payload: str) -> None:
            delta = deltas.parse(payload)
            if delta is None or delta.instance_id == member.id:
                return
            if self.broker.wants_deltas(delta.conversation_id):
                piece = [(delta.step, delta.text)]
                call_soon(token, self.broker.publish_deltas, delta.conversation_id, piece)

        listener.on(DELTAS_CHANNEL, on_delta)
        listener.on(QUEUE_CHANNEL, lambda _: call_soon(token, member.wake))
        listener.on(CONTROL_CHANNEL, on_control, on_reconnect=lambda: call_soon(token, member.wake))
        await self._joined.enter_async_context(relay)
        await self._joined.enter_async_context(listener)

    def follow(
        self, conversation_id: str, after_seq: int = 0, *, deltas: bool = False
    ) -> AbstractAsyncContextManager[Follower]:
        if not deltas:
            return super().follow(conversation_id, after_seq)
        return self._follow_deltas(conversation_id, after_seq)

    @asynccontextmanager
    async def _follow_deltas(self, conversation_id: str, after_seq: int) -> AsyncIterator[Follower]:
        # Said at once, so that the instance running it sends them from its
        # next look on (a second at most); the heartbeat says it again.
        async with super().follow(conversation_id, after_seq, deltas=True) as follower:
            try:
                await self.shared.want_deltas(conversation_id)
            except (StoreUnavailable, LaneFull) as exc:
                # Deltas are best effort: the stream goes on with its events.
                log.warning("deltas of %s not asked for elsewhere: %s", conversation_id, exc)
            yield follower

    def drain(self) -> None:
        # Before the runs are asked to pause, which would hide who asked.
        self.member.hand_over()
        super().drain()

    async def _leave(self) -> None:
        # Not shielded here: the task group must exit in the scope it entered.
        # Leaving shields itself.
        await self._joined.aclose()

    # -- runs -------------------------------------------------------------------

    async def _create_queued(
        self, record: ConversationRecord, instance: Agent, events: list[NewEvent]
    ) -> Conversation:
        try:
            await self.shared.create(record, events)
        except LaneFull as exc:
            raise await self._not_admitted(exc, record.id) from exc
        return await self.get(record.id)

    async def run(self, conversation_id: str) -> Conversation:
        await self.shared.start(conversation_id)
        return await self.get(conversation_id)

    async def _stop(
        self, conversation_id: str, trigger: PauseAsked | InterruptAsked
    ) -> Conversation:
        action: Literal["pause", "interrupt"] = (
            "pause" if isinstance(trigger, PauseAsked) else "interrupt"
        )
        # Kept in the run's row wherever it runs, here too: should its owner be
        # lost, the run is paused rather than taken on elsewhere.
        owner = await self.shared.stop(conversation_id, action)
        if conversation_id in self.runs.handles:
            self.member.applied(conversation_id, action)
            return await super()._stop(conversation_id, trigger)
        if owner == self.member.id:
            # Taken here, not yet started: applied as it starts.
            self.member.control(conversation_id, action)
        view = await self.get(conversation_id)
        return msgspec.structs.replace(view, pause_requested=True) if owner else view

    async def send_message(
        self,
        conversation_id: str,
        content: str,
        *,
        run: bool = True,
        if_running: IfRunning = "enqueue",
    ) -> tuple[Event, Conversation]:
        message = NewEvent("message", "user", {"text": content})
        if not run:
            [event] = await self._append(conversation_id, [message])
            if if_running == "interrupt":
                await self.shared.interrupt_for(conversation_id, event)
            return event, await self.get(conversation_id)
        event, refused = await self.shared.send(conversation_id, message, if_running=if_running)
        if refused is not None:
            raise RunNotAdmitted(refused, event=event, conversation=await self.get(conversation_id))
        return event, await self.get(conversation_id)

    async def _delete_stored(self, conversation_id: str) -> bool:
        return await self.shared.delete(conversation_id)

    async def run_ended(
        self, conversation_id: str, run: RunHandle | None, timeout_s: float
    ) -> bool:
        # Any instance may be running it: see laneway.cluster.waits.
        sub = self.broker.subscribe(conversation_id)
        try:
            with anyio.move_on_after(timeout_s):
                while True:
                    ended, held = await self.shared.settled(conversation_id)
                    if ended and not held:
                        return True
                    if sub.closed:
                        return False  # the server is stopping
                    with anyio.move_on_after(RECHECK_S if ended else IDLE_RECHECK_S):
                        await sub.wait()
        finally:
            self.broker.unsubscribe(sub)
        return False

    async def instances(self) -> list[Instance]:
        """The live instances sharing the database, this one among them."""
        return await self.shared.instances()

    # -- views: places in the shared queue ---------------------------------------

    async def get(self, conversation_id: str) -> Conversation:
        view = await super().get(conversation_id)
        if view.status != "queued" or view.queue_position is not None:
            return view
        position = await self.shared.position(conversation_id)
        return msgspec.structs.replace(view, queue_position=position)

    async def list_conversations(
        self, *, status: Status | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Conversation], str | None]:
        views, next_cursor = await super().list_conversations(
            status=status, limit=limit, cursor=cursor
        )
        if any(v.status == "queued" and v.queue_position is None for v in views):
            places = await self.shared.positions()
            views = [
                msgspec.structs.replace(v, queue_position=places.get(v.id))
                if v.status == "queued" and v.queue_position is None
                else v
                for v in views
            ]
        return views, next_cursor


def open_service(
    store: EventStore, lanes: Lanes, *, cluster: ClusterSettings, **kwargs: Any
) -> ConversationService:
    """The service for ``store``: one of several instances on a PostgreSQL
    database, or the one process of a SQLite file."""
    if isinstance(store, PostgresEventStore):
        return SharedConversationService(store, lanes, cluster=cluster, **kwargs)
    return ConversationService(store, lanes, **kwargs)
