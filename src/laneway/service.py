"""ConversationService: conversations, their runs, their events; async and backend-neutral.

Runs themselves are kept by :class:`laneway.runs.Runs`, which the service owns.
Blocking store calls made for requests go through the io lane; a run's own
writes happen in its run-lane thread.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import anyio
import anyio.lowlevel
import msgspec

from laneway import restart
from laneway.agents import Agent, AgentCatalog, AgentConfigError
from laneway.broker import EventBroker
from laneway.cluster.instances import Instance
from laneway.errors import Conflict, InvalidRequest, NotFound, RunNotAdmitted
from laneway.event_reads import EventReads
from laneway.lanes import LaneFull, Lanes
from laneway.lifecycle import (
    WAITING_PHASES,
    Deleted,
    InterruptAsked,
    PauseAsked,
    visible_status,
)
from laneway.messages import MessageDelivery
from laneway.models import (
    AgentSpec,
    Conversation,
    ConversationRecord,
    ConversationUpdate,
    Event,
    IfRunning,
    NewEvent,
    Status,
    status_event,
    utc_now,
)
from laneway.runhandle import RunHandle
from laneway.runner import RunLeases
from laneway.runs import Runs
from laneway.store.base import EventStore
from laneway.views import conversation_view

log = logging.getLogger("laneway.runs")

DEFAULT_MAX_STEPS = 50
# The id GET /api/instances gives the one process of a SQLite store.
LOCAL_INSTANCE = "local"


class ConversationService(EventReads):
    """Use as ``async with ConversationService(store, lanes) as service:``."""

    def __init__(
        self,
        store: EventStore,
        lanes: Lanes,
        *,
        step_timeout_s: float = 300.0,
        shutdown_grace_s: float = 10.0,
        agents: AgentCatalog | None = None,
        broker: EventBroker | None = None,
        leases: RunLeases | None = None,
    ) -> None:
        self.store = store
        self.lanes = lanes
        self.agents = agents if agents is not None else AgentCatalog()
        self.broker = broker if broker is not None else EventBroker()
        self.runs = Runs(
            store,
            lanes,
            self.broker,
            append=self._append,
            make_agent=self.agents.make,
            step_timeout_s=step_timeout_s,
            shutdown_grace_s=shutdown_grace_s,
            leases=leases,
        )
        self.messages = MessageDelivery(
            self.runs, append=self._append, record=self._record, not_admitted=self._not_admitted
        )
        self.started_at = utc_now()
        # Set by drain: streams that follow no conversation (the lanes stream)
        # end on it, as the broker's close_all ends the event streams.
        self.draining = anyio.Event()

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._token = anyio.lowlevel.current_token()
        await self._start_runs()
        return self

    async def _start_runs(self) -> None:
        """Settle the runs a stopped process left, then take runs."""
        recovery = await restart.settle(self.store, self.lanes)
        await self.runs.__aenter__()
        try:
            await restart.requeue(self.runs, recovery.requeued)
        except BaseException as exc:
            await self.runs.__aexit__(type(exc), exc, exc.__traceback__)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self.drain()
        return await self.runs.__aexit__(exc_type, exc, tb)

    def drain(self) -> None:
        """Begin shutting down: admit no new runs, ask every run to pause (see
        :meth:`Runs.begin_shutdown`) and end every event stream and lanes stream.

        The server calls this as soon as it is asked to stop, because it waits for
        open connections to close before the app's own shutdown runs, and a
        stream would otherwise keep its connection open until forced closed.
        """
        self.runs.begin_shutdown()
        self.broker.close_all()
        self.draining.set()

    def drain_soon(self) -> None:
        """:meth:`drain` from a signal handler or another thread: on the loop's
        next turn, in a context where anyio knows the running backend (a plain
        loop callback does not)."""
        token = self._token
        # RuntimeError: the loop has ended, and there is nothing left to drain.
        with contextlib.suppress(RuntimeError):
            token.backend_class.run_sync_soon(self.drain, (), token.native_token)

    # -- conversations ---------------------------------------------------------

    async def create(
        self,
        *,
        agent: AgentSpec | None = None,
        title: str = "",
        max_steps: int = DEFAULT_MAX_STEPS,
        initial_message: str | None = None,
        run: bool | None = None,
    ) -> Conversation:
        spec = agent if agent is not None else AgentSpec()
        instance = self._make_agent(spec)
        now = utc_now()
        record = ConversationRecord(
            id=uuid.uuid4().hex,
            title=title,
            status="idle",
            agent=spec,
            max_steps=max_steps,
            created_at=now,
            updated_at=now,
        )
        events = [status_event("idle", "created")]
        if initial_message is not None:
            events.append(NewEvent("message", "user", {"text": initial_message}))
        if not (run if run is not None else initial_message is not None):
            await self._store_new(record, instance, events)
            return self._view(record)
        return await self._create_queued(record, instance, events)

    async def _create_queued(
        self, record: ConversationRecord, instance: Agent, events: list[NewEvent]
    ) -> Conversation:
        """Store a new conversation with its run queued; raises RunNotAdmitted,
        storing it all the same, if the run queue is full."""
        try:
            # Reserved before the write, which stores its place in the queue order.
            handle = self.runs.reserve(record)
        except LaneFull as exc:
            # The conversation and its message are kept; only the run waits.
            await self._store_new(record, instance, events)
            raise await self._not_admitted(exc, record.id) from exc
        assert handle is not None, "a new conversation has no run yet"
        events.append(status_event("queued"))

        async def store_queued(queue_order: int) -> None:
            # Created already queued: one write instead of a create and then a status.
            queued = msgspec.structs.replace(record, status="queued", queue_order=queue_order)
            await self._store_new(queued, instance, events)

        try:
            await self.runs.launch(handle, record, store_queued=store_queued)
        except RunNotAdmitted as exc:
            raise await self._not_admitted(exc, record.id) from exc
        return await self._started_view(record.id, handle)

    async def _store_new(
        self, record: ConversationRecord, agent: Agent, events: list[NewEvent]
    ) -> None:
        stored = await self.lanes.io.run_sync(self.store.create_conversation, record, events)
        self.runs.adopt_agent(record.id, agent)
        self.broker.publish(record.id, stored)

    async def get(self, conversation_id: str) -> Conversation:
        return self._view(await self._record(conversation_id))

    async def list_conversations(
        self, *, status: Status | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Conversation], str | None]:
        """Newest first, ``limit`` at a time; pass the returned cursor for the next page."""
        records, next_cursor = await self.lanes.io.run_sync(
            lambda: self.store.list_conversations(status=status, limit=limit, cursor=cursor)
        )
        views = [self._view(r) for r in records]
        # A status the store has not taken yet may no longer match the filter.
        return [v for v in views if status is None or v.status == status], next_cursor

    async def count_conversations(self, *, status: Status | None = None) -> int:
        return await self.lanes.io.run_sync(lambda: self.store.count_conversations(status=status))

    async def count_by_status(self) -> dict[Status, int]:
        return await self.lanes.io.run_sync(self.store.count_by_status)

    async def delete(self, conversation_id: str) -> None:
        """Delete a conversation and its events; a run in flight is paused first
        (a queued one leaves the queue, a running one stops at its next step)."""
        # The run is stopped only once the delete has committed: a delete refused
        # (io lane full) must leave the conversation's run as it was. Shielded, so
        # that a client going away cannot leave a deleted conversation's run and
        # streams going.
        with anyio.CancelScope(shield=True):
            if not await self._delete_stored(conversation_id):
                raise NotFound(f"no conversation {conversation_id!r}")
            # Until here the run may have written on: a write after the commit
            # finds no conversation and ends the run, like the pause below.
            handle = self.runs.handles.get(conversation_id)
            if handle is not None:
                handle.fire(Deleted())
                if handle.phase in WAITING_PHASES:
                    await handle.done.wait()  # out of the queue, as pause() waits
            self.runs.forget_conversation(conversation_id)
            self.broker.close_conversation(conversation_id)

    async def _delete_stored(self, conversation_id: str) -> bool:
        return await self.lanes.io.run_sync(self.store.delete_conversation, conversation_id)

    async def instances(self) -> list[Instance]:
        """The instances serving the store: with a SQLite file, this process alone."""
        snapshot = msgspec.to_builtins(self.lanes.snapshot())
        running = self.lanes.run.running
        now = utc_now()
        return [Instance(LOCAL_INSTANCE, "all", self.started_at, now, snapshot, running)]

    def store_problem(self) -> str | None:
        """Why the store cannot write now, as far as the last write tells."""
        return self.store.write_problem()

    # -- runs ------------------------------------------------------------------

    async def run(self, conversation_id: str) -> Conversation:
        """Queue a run. Raises Conflict if one is queued or running, and LaneFull if
        the run queue is full (create and send_message wrap it in
        :class:`RunNotAdmitted`, which carries what they stored)."""
        record = await self._record(conversation_id)
        handle = await self.runs.start(record)
        if handle is None:
            raise Conflict(f"conversation {conversation_id!r} already has a run in progress")
        return await self._started_view(conversation_id, handle)

    async def run_ended(
        self, conversation_id: str, run: RunHandle | None, timeout_s: float
    ) -> bool:
        """Wait up to ``timeout_s`` for ``run``, the conversation's run as a
        wait began, to end; True once it has, or if there was none."""
        if run is None:
            return True
        with anyio.move_on_after(timeout_s):
            await run.done.wait()
        return run.done.is_set()

    async def _started_view(self, conversation_id: str, handle: RunHandle) -> Conversation:
        # The state at admission: a short run may already have finished by the
        # time the store is read again, and the caller asked about starting it.
        view = self._view(await self._record(conversation_id))
        return msgspec.structs.replace(view, status=visible_status("queued", handle.state))

    async def pause(self, conversation_id: str) -> Conversation:
        """Pause a run: a queued one leaves the queue at once; a running one stops
        at its next step boundary (``pause_requested`` until then)."""
        return await self._stop(conversation_id, PauseAsked())

    async def interrupt(self, conversation_id: str) -> Conversation:
        """Stop a run now: a queued one leaves the queue; a running one's step is
        asked to stop (``Agent.cancel``) and its tool calls not begun are not
        run, and it ends paused ("interrupted"). Nothing changes, and nothing is
        written, for a conversation with no run."""
        return await self._stop(conversation_id, InterruptAsked())

    async def _stop(
        self, conversation_id: str, trigger: PauseAsked | InterruptAsked
    ) -> Conversation:
        record = await self._record(conversation_id)
        handle = self.runs.handles.get(conversation_id)
        if handle is None:
            return self._view(record)
        handle.fire(trigger)
        if handle.phase in WAITING_PHASES:
            await handle.done.wait()
            record = await self._record(conversation_id)
        return self._view(record)

    async def send_message(
        self,
        conversation_id: str,
        content: str,
        *,
        run: bool = True,
        if_running: IfRunning = "enqueue",
    ) -> tuple[Event, Conversation]:
        """Store a user message and, with ``run``, make sure a run reads it (see
        :class:`MessageDelivery`). If the run queue is full, the message is kept
        and :class:`RunNotAdmitted` carries it; with ``if_running="reject"`` a
        run queued or running raises Conflict, and nothing is stored."""
        event = await self.messages.send(conversation_id, content, run=run, if_running=if_running)
        return event, await self.get(conversation_id)

    async def _not_admitted(
        self, exc: LaneFull, conversation_id: str, event: Event | None = None
    ) -> RunNotAdmitted:
        """The refusal to raise: what was stored is kept, and the error says so."""
        conversation = await self.get(conversation_id)
        return RunNotAdmitted(exc, event=event, conversation=conversation)

    # -- helpers ---------------------------------------------------------------

    def _make_agent(self, spec: AgentSpec) -> Agent:
        try:
            return self.agents.make(spec)
        except AgentConfigError as exc:
            raise InvalidRequest(str(exc)) from exc

    async def _record(self, conversation_id: str) -> ConversationRecord:
        record = self.store.cached_conversation(conversation_id)
        if record is not None:
            return record
        record = await self.lanes.io.run_sync(self.store.get_conversation, conversation_id)
        if record is None:
            raise NotFound(f"no conversation {conversation_id!r}")
        return record

    async def _append(
        self,
        conversation_id: str,
        events: Sequence[NewEvent],
        update: ConversationUpdate | None = None,
        *,
        patient: bool = False,
    ) -> list[Event]:
        """Store and publish ``events``. ``patient`` waits out a full io lane: for
        writes owed to runs already accepted, rather than for a client's request."""
        # What the conversation is owed lands first (see OwedStatuses).
        await self.runs.owed.settle(conversation_id, patient=patient)
        io = self.lanes.io
        call = io.run_sync_patiently if patient else io.run_sync
        stored = await call(self.store.append, conversation_id, events, update)
        self.broker.publish(conversation_id, stored)
        return stored

    def _view(self, record: ConversationRecord) -> Conversation:
        return conversation_view(
            self.runs.owed.overlay(record), self.runs.handles.get(record.id), self.lanes.run
        )
