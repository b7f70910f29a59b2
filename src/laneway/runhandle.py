"""The live state of one run, shared by the event loop and the run's thread.

Its phase changes only on the loop, through :meth:`RunHandle.fire`, by the
table in :mod:`laneway.lifecycle`. The thread reads that state (one immutable
record, replaced whole) and asks the loop once per decision (to end). The
step clock, which the stuck watchdog reads from the loop, has a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import anyio

from laneway.agents import Agent
from laneway.lifecycle import (
    CancelStep,
    CancelWait,
    Effect,
    LeaveThread,
    Phase,
    RunState,
    Trigger,
    transition,
)
from laneway.models import ConversationUpdate, Event, NewEvent, status_event


class StuckStep:
    """A step the watchdog found running past ``step_timeout_s``.

    Its status is written once, by whichever side gets there first: the
    watchdog's io call, or the run thread once the step has returned. The run
    thread must never wait for the watchdog's write to get an io token, since
    it holds a run token meanwhile and in shared mode both come from one pool;
    a write already claimed is under way in its io thread and needs no more.
    """

    def __init__(self, number: int, timeout_s: float) -> None:
        self.reason = f"step {number} has run longer than step_timeout_s ({timeout_s:g} s)"
        self.written = threading.Event()
        self._lock = threading.Lock()
        self._claimed = False

    def write(
        self, append: Callable[[Sequence[NewEvent], ConversationUpdate], list[Event]]
    ) -> list[Event] | None:
        """Write the stuck status with ``append`` (a blocking store write) and
        set ``written``, unless another caller has claimed the write: then
        None, and that caller's write is under way."""
        with self._lock:
            if self._claimed:
                return None
            self._claimed = True
        try:
            return append([status_event("stuck", self.reason)], ConversationUpdate(status="stuck"))
        finally:
            self.written.set()


class Interruptible(Protocol):
    """What the loop stops when a run is interrupted: its step's tool calls."""

    def interrupt(self) -> None: ...


class RunHandle:
    """One run, from its reservation until its task ends."""

    def __init__(self, conversation_id: str, *, queue_order: int) -> None:
        self.conversation_id = conversation_id
        # Its place in the order runs enter the run lane, stored with "queued".
        self.queue_order = queue_order
        self.state = RunState()
        # Cancels the wait for a run token (pause, interrupt or delete while queued).
        self.wait_scope = anyio.CancelScope()
        # Shields the run's thread; cancelled only to leave it behind at shutdown.
        self.thread_scope: anyio.CancelScope | None = None
        # Set once the run is in the run queue (or past it), or gone without
        # getting there: until then a message handed to it may find no run.
        self.settled = anyio.Event()
        self.done = anyio.Event()
        # Set by the run thread once it has an agent, and the tool calls its
        # step has under way: what an interrupt stops.
        self.agent: Agent | None = None
        self.tools: Interruptible | None = None
        # How the run ended, for the log line the service writes.
        self.ending = ""
        self.error: str | None = None
        self.stuck: StuckStep | None = None
        self._clock = threading.Lock()
        self._step_started: float | None = None
        self._step_number = 0

    @property
    def phase(self) -> Phase:
        return self.state.phase

    @property
    def abandoned(self) -> bool:
        return self.state.phase is Phase.ABANDONED

    def fire(self, trigger: Trigger) -> tuple[Effect, ...]:
        """Apply ``trigger``; call on the loop only. Carries out the actions the
        transition owes here and returns all it owes, answers included, for the
        caller to carry out the rest (the writes)."""
        self.state, effects = transition(self.state, trigger)
        for effect in effects:
            if isinstance(effect, CancelWait):
                self.wait_scope.cancel()
            elif isinstance(effect, CancelStep):
                self._cancel_step()
            elif isinstance(effect, LeaveThread) and self.thread_scope is not None:
                self.thread_scope.cancel()
        if self.state.phase is Phase.DONE:
            self.done.set()
        return effects

    def _cancel_step(self) -> None:
        """Stop waiting for the step's tool calls, and ask the agent's step in
        flight, if any, to stop (the optional ``Agent.cancel``)."""
        if self.tools is not None:
            self.tools.interrupt()
        with self._clock:
            in_step = self._step_started is not None
        cancel = getattr(self.agent, "cancel", None)
        if in_step and cancel is not None:
            cancel()

    # -- the step clock, read by the stuck watchdog ------------------------------

    def begin_step(self, number: int, interrupts: int) -> bool:
        """Start the step clock, unless the run was interrupted since it had
        ``interrupts``; False then. Under the lock :meth:`_cancel_step` takes
        after an interrupt is counted: a step begins before an interrupt's
        cancel looks for it, or not at all."""
        with self._clock:
            if self.state.interrupts != interrupts:
                return False
            self._step_started = time.monotonic()
            self._step_number = number
            return True

    def end_step(self) -> StuckStep | None:
        """Stop the step clock; the step, if the watchdog declared it stuck."""
        with self._clock:
            self._step_started = None
            return self.stuck

    def check_stuck(self, timeout_s: float) -> StuckStep | None:
        """Mark the run stuck if its step has outlived ``timeout_s``; return the
        stuck step the first time only."""
        with self._clock:
            started = self._step_started
            if self.stuck or started is None or time.monotonic() - started <= timeout_s:
                return None
            self.stuck = StuckStep(self._step_number, timeout_s)
            return self.stuck

    def start_again(self) -> None:
        """Ready the handle for the run that follows a stop with messages unread."""
        with self._clock:
            self.stuck = None
        self.ending = ""
        self.error = None
