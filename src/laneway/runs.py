"""Runs: admission into the run lane and the task each run lives in, with
what its loop owes it. Pausing every run at shutdown is in :mod:`.shutdown`,
the stuck watchdog in :mod:`.watchdog`.

Every run is a task in this object's task group, so closing it leaves nothing
running. It writes the statuses that happen on the loop (queued, paused while
queued, stuck, left behind at shutdown); the run thread writes the rest.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

import anyio
from anyio.abc import TaskGroup, TaskStatus

from laneway.agents import Agent, ToolResult
from laneway.broker import EventBroker
from laneway.errors import RunNotAdmitted, ShuttingDown
from laneway.lanes import LaneFull, Lanes
from laneway.lifecycle import (
    Enqueued,
    LeftQueue,
    Phase,
    PutBack,
    QueueRefused,
    StartAgain,
    TaskEnded,
    ThreadReturned,
    TokenGranted,
    WriteStatus,
    owed,
)
from laneway.models import (
    ConversationRecord,
    ConversationUpdate,
    Event,
    NewEvent,
    Status,
    status_event,
)
from laneway.owed import Append, OwedStatuses
from laneway.runhandle import RunHandle
from laneway.runner import AgentState, MakeAgent, RunLeases, Runner, thread_failure
from laneway.shutdown import pause_all
from laneway.store.base import EventStore
from laneway.toolcalls import tool_result_data
from laneway.turnstile import Turnstile
from laneway.watchdog import watch_stuck_steps

log = logging.getLogger("laneway.runs")

# Stores the "queued" status of a run, given its place in the queue order.
StoreQueued = Callable[[int], Awaitable[object]]


class Runs:
    """Use as ``async with Runs(...) as runs:``; the service owns one."""

    def __init__(
        self,
        store: EventStore,
        lanes: Lanes,
        broker: EventBroker,
        *,
        append: Append,
        make_agent: MakeAgent,
        step_timeout_s: float,
        shutdown_grace_s: float,
        leases: RunLeases | None = None,
    ) -> None:
        self.store = store
        self.leases = leases
        self.make_agent = make_agent
        self.lanes = lanes
        self.broker = broker
        self.step_timeout_s = step_timeout_s
        self.shutdown_grace_s = shutdown_grace_s
        self._append = append
        # Runs queued or running, by conversation id.
        self.handles: dict[str, RunHandle] = {}
        # Agents keep their state between the runs of a conversation.
        self.agents: dict[str, AgentState] = {}
        # What runs that ended are owed while the store refuses writes.
        self.owed = OwedStatuses(store, lanes.io, broker, append)
        self._tg: TaskGroup | None = None
        # Runs enter the run lane in the order they are reserved, which is the
        # order a restart queues them again in (see reserve and launch).
        self._turnstile = Turnstile(store.last_queue_order())
        self._admitting = False
        # Set once shutdown has begun (see begin_shutdown), and once it is over.
        self._shutting_down = False
        self._shut_down = anyio.Event()

    async def __aenter__(self) -> Runs:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(watch_stuck_steps, self, self._tg.start_soon)
        self._tg.start_soon(self.broker.pace)
        self._tg.start_soon(self.owed.keep_settling)
        self._admitting = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        try:
            with anyio.CancelScope(shield=True):
                await self.shut_down()
        finally:
            # Whatever shutdown met, no task of the group outlives it.
            self._tg.cancel_scope.cancel()
            exited = await self._tg.__aexit__(exc_type, exc, tb)
        return exited

    def stop_admitting(self) -> None:
        self._admitting = False

    @property
    def admitting(self) -> bool:
        return self._admitting

    def adopt_agent(self, conversation_id: str, agent: Agent) -> None:
        """Keep a new conversation's agent for its first run."""
        self._keep_agent(conversation_id, AgentState(agent))

    def _keep_agent(self, conversation_id: str, state: AgentState) -> None:
        # Not under leases: an agent kept here would miss what a run on another
        # instance adds. The next run here rebuilds its agent from the log.
        if self.leases is None:
            self.agents[conversation_id] = state

    def forget_conversation(self, conversation_id: str) -> None:
        """Drop what is kept for a deleted conversation."""
        self.agents.pop(conversation_id, None)
        self.owed.forget(conversation_id)

    def begin_shutdown(self) -> None:
        """Stop admitting and ask every run to pause, now, and leave behind what
        has not paused once the grace period is over; call on the loop.

        The server calls this the moment it is asked to stop, before it waits
        for open connections to close: under hypercorn a keep-alive client
        kept it waiting the whole grace period, during which runs went on
        stepping and queued ones started, and the app's own shutdown then
        waited the grace period again.
        """
        if self._shutting_down or self._tg is None:
            return
        self.stop_admitting()
        # Nothing here may need to know the backend: uvicorn's signal handling
        # calls this from a plain loop callback, outside any task.
        self._tg.start_soon(self._shutdown)
        self._shutting_down = True

    async def shut_down(self) -> None:
        """Begin shutting down, if not begun, and wait until it is over."""
        self.begin_shutdown()
        await self._shut_down.wait()

    async def _shutdown(self) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await pause_all(self, anyio.current_time() + self.shutdown_grace_s)
        finally:
            self._shut_down.set()

    def _check_admitting(self) -> None:
        if not self._admitting or self._tg is None:
            raise ShuttingDown("the server is shutting down and admits no new runs")

    async def start(
        self, record: ConversationRecord, *, queued_stored: bool = False
    ) -> RunHandle | None:
        """Queue a run of ``record``; None if one is already queued or running.
        Raises ShuttingDown, or LaneFull when the run queue is full.

        ``queued_stored``: the "queued" status is stored already, as for the
        runs a restart queues again. ``record`` is then the record to put back
        if the run is refused after all.
        """
        try:
            handle = self.reserve(record)
        except (ShuttingDown, LaneFull) as exc:
            if queued_stored:
                full = isinstance(exc, LaneFull)
                await self._put_back(record, "run queue full" if full else "server shutting down")
            raise
        if handle is not None:
            await self.launch(handle, record, queued_stored=queued_stored)
        return handle

    def reserve(self, record: ConversationRecord) -> RunHandle | None:
        """Claim the run of ``record`` before anything is written, and number its
        place in the queue order; None if one is already queued or running.
        Raises ShuttingDown, or LaneFull when the run queue is full. Follow at
        once with :meth:`launch`, which starts it: every run reserved later
        waits for it to enter the run lane or give up."""
        self._check_admitting()
        if record.id in self.handles:
            return None
        self.lanes.run.check_admission()
        handle = RunHandle(record.id, queue_order=self._turnstile.take())
        self.handles[record.id] = handle
        return handle

    async def launch(
        self,
        handle: RunHandle,
        record: ConversationRecord,
        *,
        first: Sequence[NewEvent] = (),
        store_queued: StoreQueued | None = None,
        queued_stored: bool = False,
    ) -> list[Event]:
        """Store ``first`` and the "queued" status with the run's place in the
        queue order, in one write, then put the reserved run in the run queue
        once every run reserved before it is in (see :mod:`.turnstile`).
        Returns what was stored of ``first``.

        ``store_queued`` makes that write instead, given the place: a new
        conversation is created queued. ``queued_stored``: it is made already
        (runs requeued at a restart, whose order their stored places give).

        Raises LaneFull if others filled the queue meanwhile; the status is then
        put back. When the caller's own write (``first``, ``store_queued``) was
        made here, the error is a RunNotAdmitted, carrying the first event: a
        full io lane refusing that write raises its own LaneFull.
        """
        cid = handle.conversation_id
        stored: list[Event] = []
        # "queued" is written before the run can take a token: a run must never
        # hold a token while it waits for an io call, because in shared mode the
        # io lane draws on the same pool, and runs holding all of it would wait
        # forever. Shielded, so that a client going away cannot leave the status
        # "queued" with no run behind it.
        with anyio.CancelScope(shield=True):
            try:
                # Released however this ends: every later run waits for it.
                with self._turnstile.held(handle.queue_order):
                    if store_queued is not None:
                        await store_queued(handle.queue_order)
                    elif not queued_stored:
                        update = ConversationUpdate(status="queued", queue_order=handle.queue_order)
                        stored = await self._append(cid, [*first, status_event("queued")], update)
                    refused = await self._enter(handle, record)
                if refused is not None:
                    # Others filled the queue while "queued" was being written.
                    if put_back := owed(handle.fire(QueueRefused()), PutBack):
                        await self._put_back(record, put_back.reason)
                    if first or store_queued is not None:
                        event = stored[0] if first else None
                        raise RunNotAdmitted(refused, event=event) from refused
                    raise refused
            except BaseException:
                # Never queued. Forgotten only after any put-back: until then the
                # stored status is still "queued", and a run claimed from it would
                # put that back if refused.
                self._forget(handle)
                raise
            finally:
                # A message handed to this run waits for this, then queues its own
                # run if this one is gone.
                handle.settled.set()
        log.debug("run %s queued", cid)
        return stored[: len(first)]

    async def _enter(self, handle: RunHandle, record: ConversationRecord) -> LaneFull | None:
        """Start the run's task once the runs reserved before it have entered the
        run lane or given up; it returns once the run is in the lane's queue or
        holds a token. The refusal if the queue is full."""
        assert self._tg is not None
        await self._turnstile.wait_turn(handle.queue_order)
        try:
            await self._tg.start(self._run_task, handle, record)
        except LaneFull as exc:
            return exc
        return None

    def _forget(self, handle: RunHandle) -> None:
        del self.handles[handle.conversation_id]
        if self.leases is not None:
            self.leases.ended(handle.conversation_id)
        # A pause, a message or shutdown may be waiting on this run.
        handle.fire(TaskEnded())

    async def _put_back(self, record: ConversationRecord, reason: str) -> None:
        """Restore the status ``record`` had before "queued" was stored, and its
        place in the queue order with it."""
        update = ConversationUpdate(status=record.status, queue_order=record.queue_order)
        await self.owed.write(record.id, [status_event(record.status, reason)], update)

    async def _write_status(self, conversation_id: str, status: Status, reason: str) -> None:
        await self.owed.write(
            conversation_id, [status_event(status, reason)], ConversationUpdate(status=status)
        )

    async def _run_task(
        self,
        handle: RunHandle,
        record: ConversationRecord,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        cid = handle.conversation_id
        lane = self.lanes.run
        assert self._tg is not None
        runner = Runner(
            handle=handle,
            record=record,
            state=self.agents.get(cid),
            make_agent=self.make_agent,
            store=self.store,
            lanes=self.lanes,
            broker=self.broker,
            spawn=self._tg.start_soon,
            late=functools.partial(self._late_tool_result, cid),
            write=self.leases.write_for(cid) if self.leases is not None else None,
            leases=self.leases,
        )

        def enqueued() -> None:
            handle.fire(Enqueued())
            task_status.started()

        try:
            failure = None
            with handle.wait_scope:
                async with lane.hold(ticket=cid, on_enqueued=enqueued):
                    handle.fire(TokenGranted())
                    if handle.phase is Phase.RUNNING:
                        failure = await self._execute(handle, runner)
            if failure is not None and self.leases is None:
                # Written once the run token is back: never wait for io holding it.
                # Not under a lease: written late, it could land after a takeover;
                # the run is settled as a lost owner's instead.
                await self.owed.write(cid, *failure)
            if handle.phase is Phase.LEAVING:
                if write := owed(handle.fire(LeftQueue()), WriteStatus):
                    await self._write_status(cid, write.status, write.reason)
                log.info("run %s left the queue", cid)
        finally:
            # One refused a place in the queue is launch()'s to forget, after it
            # has put the status back.
            if handle.state.enqueued:
                self._forget(handle)

    async def _late_tool_result(
        self, conversation_id: str, state: AgentState, result: ToolResult
    ) -> None:
        """Store the result of a tool call that was under way when its run was
        interrupted, and keep it for the conversation's next step."""
        event = NewEvent("tool_result", "tool", tool_result_data(result))
        await self.owed.write(conversation_id, [event], None)
        state.add_results([result])

    async def _execute(
        self, handle: RunHandle, runner: Runner
    ) -> tuple[list[NewEvent], ConversationUpdate] | None:
        """Run in the token held, and again while a run stops with messages unread.
        Returns the error status to write if the run could not write its own."""
        cid = handle.conversation_id
        execute = runner.execute
        log.info("run %s started", cid)
        while True:
            # Shielded: a run is never cancelled mid-step. Only shutdown past its
            # grace period cancels this scope, leaving the thread behind.
            failure = None
            with anyio.CancelScope(shield=True) as thread_scope:
                handle.thread_scope = thread_scope
                try:
                    state = await self.lanes.run.to_thread(execute, abandon_on_cancel=True)
                except Exception as exc:
                    failure = thread_failure(cid, exc)
                else:
                    if state is not None and not handle.state.deleted:
                        self._keep_agent(cid, state)
            effects = handle.fire(ThreadReturned(failed=failure is not None))
            if failure is not None:
                return failure
            self._log_end(handle)
            if StartAgain() not in effects:
                return None
            handle.start_again()
            log.info("run %s started again for messages left unread", cid)
            execute = runner.execute_again

    def _log_end(self, handle: RunHandle) -> None:
        cid = handle.conversation_id
        if handle.error is not None:
            log.error("run %s error: %s", cid, handle.error)
        else:
            log.info("run %s ended: %s", cid, handle.ending or "stopped")
