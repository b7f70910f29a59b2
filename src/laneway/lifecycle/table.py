"""A run's life as one explicit state machine: phases, the state, and the table
``(phase, trigger) -> (next state, what is owed)``.

Pure: no I/O, no threads, no anyio. :class:`laneway.runner.RunHandle` holds a
:class:`RunState` and feeds it triggers on the event loop, through one method;
it carries out what each transition owes (cancel the queue wait, cancel the
step, write a status) and tells the caller the answer (a message accepted or
refused, an end claimed or declined). A trigger that the table has no row for
in the current phase is a bug, and raises :class:`IllegalTransition` at once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import msgspec

from laneway.lifecycle.records import (
    Accepted,
    CancelStep,
    CancelWait,
    Claimed,
    Declined,
    Deleted,
    Effect,
    EndAsked,
    Enqueued,
    GraceExpired,
    InterruptAsked,
    JoinShutdownBatch,
    LeaveThread,
    LeftQueue,
    MessageStored,
    PauseAsked,
    PutBack,
    QueueRefused,
    Refused,
    ShutdownBegan,
    StartAgain,
    TaskEnded,
    ThreadReturned,
    TokenGranted,
    Trigger,
    WriteStatus,
)
from laneway.models import Status

QUEUED_REASON = "paused while queued"
PAUSE_REASON = "pause requested"
INTERRUPT_REASON = "interrupted"


class Phase(enum.Enum):
    RESERVED = "reserved"  # claimed; its "queued" status is being written
    REFUSED = "refused"  # the queue refused it; its old status is being put back
    QUEUED = "queued"  # waiting in the run lane's queue
    LEAVING = "leaving"  # asked out of the queue; its task has not yet left
    RUNNING = "running"  # holds a run token; its thread steps
    ENDING = "ending"  # its thread has agreed to end, or returned
    ABANDONED = "abandoned"  # left behind at shutdown; its writes are refused
    DONE = "done"  # its task has ended; nothing refers to it any more


# -- the state ------------------------------------------------------------------


class RunState(msgspec.Struct, frozen=True):
    phase: Phase = Phase.RESERVED
    # In the queue or past it: admission can no longer fail.
    enqueued: bool = False
    # The reason of a pause asked for and not yet taken effect.
    pause: str | None = None
    # Set by shutdown and delete: no message can withdraw their pause.
    final: bool = False
    deleted: bool = False
    # The seq of the newest message handed to this run. A seq, not a count: a
    # message the run already read from the store is not unread, whenever the
    # service got round to telling the run about it.
    newest_message_seq: int = 0
    # The run stopped with messages unread: it starts again in the same token.
    rerun: bool = False
    # How many interrupts have reached the running run: a step during which
    # this changes was interrupted.
    interrupts: int = 0
    # The status its task writes if it leaves the queue; None when another
    # writes it (shutdown's batch) or nothing is written (deleted).
    leave_reason: str | None = QUEUED_REASON


Outcome = tuple[RunState, tuple[Effect, ...]]
Rule = Callable[[RunState, Trigger], Outcome]


class IllegalTransition(RuntimeError):
    def __init__(self, phase: Phase, trigger: Trigger) -> None:
        super().__init__(f"run phase {phase.name} has no transition for {type(trigger).__name__}")
        self.phase = phase
        self.trigger = trigger


def _to(phase: Phase, *effects: Effect) -> Rule:
    def rule(state: RunState, trigger: Trigger) -> Outcome:
        return msgspec.structs.replace(state, phase=phase), effects

    return rule


def _stay(*effects: Effect) -> Rule:
    def rule(state: RunState, trigger: Trigger) -> Outcome:
        return state, effects

    return rule


def _replace(state: RunState, **changes: object) -> RunState:
    return msgspec.structs.replace(state, **changes)


def _reason(trigger: Trigger) -> str:
    return INTERRUPT_REASON if isinstance(trigger, InterruptAsked) else PAUSE_REASON


# -- waiting for the queue ------------------------------------------------------


def _reserved_enqueued(state: RunState, trigger: Trigger) -> Outcome:
    # A pause asked while "queued" was being written takes effect now.
    phase = Phase.QUEUED if state.pause is None else Phase.LEAVING
    return _replace(state, phase=phase, enqueued=True), ()


def _ask_out(state: RunState, trigger: Trigger) -> Outcome:
    """Pause or interrupt a run that has no token: it leaves the queue at once,
    or, not yet in it, as soon as it gets there."""
    if isinstance(trigger, InterruptAsked) and trigger.resume:
        return state, ()  # a queued run reads the new message when it starts
    reason = QUEUED_REASON if isinstance(trigger, PauseAsked) else INTERRUPT_REASON
    phase = Phase.LEAVING if state.phase is Phase.QUEUED else state.phase
    changed = _replace(state, phase=phase, pause=reason, leave_reason=reason)
    return changed, (CancelWait(),)


def _delete_waiting(state: RunState, trigger: Trigger) -> Outcome:
    phase = Phase.LEAVING if state.phase is Phase.QUEUED else state.phase
    changed = _replace(
        state, phase=phase, pause=PAUSE_REASON, final=True, deleted=True, leave_reason=None
    )
    return changed, (CancelWait(),)


def _shutdown_reserved(state: RunState, trigger: Trigger) -> Outcome:
    # Its task writes its pause once "queued" is stored, as on any pause.
    changed = _replace(state, pause=QUEUED_REASON, final=True, leave_reason=QUEUED_REASON)
    return changed, (CancelWait(),)


def _shutdown_queued(state: RunState, trigger: Trigger) -> Outcome:
    changed = _replace(
        state, phase=Phase.LEAVING, pause=QUEUED_REASON, final=True, leave_reason=None
    )
    return changed, (CancelWait(), JoinShutdownBatch())


def _message_waiting(state: RunState, trigger: Trigger) -> Outcome:
    assert isinstance(trigger, MessageStored)
    if state.pause is not None:
        return state, (Refused(),)
    changed = _replace(state, newest_message_seq=max(state.newest_message_seq, trigger.seq))
    return changed, (Accepted(settling=state.phase is Phase.RESERVED),)


def _left_queue(state: RunState, trigger: Trigger) -> Outcome:
    if state.leave_reason is None or state.deleted:
        return state, ()
    return state, (WriteStatus("paused", state.leave_reason),)


def _mark_deleted(state: RunState, trigger: Trigger) -> Outcome:
    return _replace(state, deleted=True, final=True, leave_reason=None), ()


# -- running --------------------------------------------------------------------


def _pause_running(state: RunState, trigger: Trigger) -> Outcome:
    if state.pause is not None:
        return state, ()  # the first reason stands
    return _replace(state, pause=PAUSE_REASON), ()


def _interrupt_running(state: RunState, trigger: Trigger) -> Outcome:
    assert isinstance(trigger, InterruptAsked)
    changes: dict[str, object] = {"interrupts": state.interrupts + 1}
    if not trigger.resume:
        changes["pause"] = INTERRUPT_REASON
    return _replace(state, **changes), (CancelStep(),)


def _message_running(state: RunState, trigger: Trigger) -> Outcome:
    assert isinstance(trigger, MessageStored)
    if state.pause is not None and state.final:
        return state, (Refused(),)
    # A message asking for a run outranks a pause not yet taken effect, as it
    # would once the run had paused: the run goes on and reads it.
    changed = _replace(
        state, pause=None, newest_message_seq=max(state.newest_message_seq, trigger.seq)
    )
    return changed, (Accepted(),)


def _end_asked(state: RunState, trigger: Trigger) -> Outcome:
    assert isinstance(trigger, EndAsked)
    ending = _replace(state, phase=Phase.ENDING)
    if trigger.request == "pause":
        if state.pause is None:
            return state, (Declined(),)  # withdrawn by a message since the thread saw it
        return ending, (Claimed(state.pause),)
    unread = state.newest_message_seq > trigger.read_seq
    if unread and trigger.request == "done":
        return state, (Declined(),)
    if unread and trigger.request == "stop":
        # Still accepting: the run that follows reads what comes meanwhile too.
        return _replace(state, rerun=True), (Claimed(),)
    return ending, (Claimed(),)


def _thread_returned(state: RunState, trigger: Trigger) -> Outcome:
    assert isinstance(trigger, ThreadReturned)
    if state.rerun and not state.deleted and not trigger.failed:
        return _replace(state, rerun=False), (StartAgain(),)
    return _replace(state, phase=Phase.ENDING, rerun=False), ()


def _delete_running(state: RunState, trigger: Trigger) -> Outcome:
    # Deleting stops work now: nothing the step does can be stored any more.
    changed = _replace(state, pause=PAUSE_REASON, final=True, deleted=True)
    return changed, (CancelStep(),)


def _shutdown_running(state: RunState, trigger: Trigger) -> Outcome:
    return _replace(state, pause=state.pause or PAUSE_REASON, final=True), ()


_IGNORED_LATE = (PauseAsked, InterruptAsked, ShutdownBegan)

TABLE: dict[tuple[Phase, type[Trigger]], Rule] = {
    # Reserved: "queued" is being written; the run is not yet in the queue.
    (Phase.RESERVED, Enqueued): _reserved_enqueued,
    (Phase.RESERVED, QueueRefused): _to(Phase.REFUSED, PutBack("run queue full")),
    # Storing "queued" failed: the run was never in the queue.
    (Phase.RESERVED, TaskEnded): _to(Phase.DONE),
    (Phase.RESERVED, PauseAsked): _ask_out,
    (Phase.RESERVED, InterruptAsked): _ask_out,
    (Phase.RESERVED, MessageStored): _message_waiting,
    (Phase.RESERVED, Deleted): _delete_waiting,
    (Phase.RESERVED, ShutdownBegan): _shutdown_reserved,
    (Phase.RESERVED, GraceExpired): _to(Phase.ABANDONED),
    # Refused: the old status is being put back.
    (Phase.REFUSED, MessageStored): _stay(Refused()),
    (Phase.REFUSED, Deleted): _mark_deleted,
    (Phase.REFUSED, GraceExpired): _to(Phase.ABANDONED),
    (Phase.REFUSED, TaskEnded): _to(Phase.DONE),
    # Queued.
    (Phase.QUEUED, TokenGranted): _to(Phase.RUNNING),
    (Phase.QUEUED, PauseAsked): _ask_out,
    (Phase.QUEUED, InterruptAsked): _ask_out,
    (Phase.QUEUED, MessageStored): _message_waiting,
    (Phase.QUEUED, Deleted): _delete_waiting,
    (Phase.QUEUED, ShutdownBegan): _shutdown_queued,
    (Phase.QUEUED, GraceExpired): _to(Phase.ABANDONED),
    # The service's task group was cancelled: it is closing after an error.
    (Phase.QUEUED, TaskEnded): _to(Phase.DONE),
    # Leaving the queue. A token granted as the wait was cancelled is handed back
    # unused: the run still leaves.
    (Phase.LEAVING, TokenGranted): _stay(),
    (Phase.LEAVING, LeftQueue): _left_queue,
    (Phase.LEAVING, MessageStored): _stay(Refused()),
    (Phase.LEAVING, Deleted): _mark_deleted,
    (Phase.LEAVING, GraceExpired): _to(Phase.ABANDONED),
    (Phase.LEAVING, TaskEnded): _to(Phase.DONE),
    # Running.
    (Phase.RUNNING, PauseAsked): _pause_running,
    (Phase.RUNNING, InterruptAsked): _interrupt_running,
    (Phase.RUNNING, MessageStored): _message_running,
    (Phase.RUNNING, EndAsked): _end_asked,
    (Phase.RUNNING, ThreadReturned): _thread_returned,
    (Phase.RUNNING, Deleted): _delete_running,
    (Phase.RUNNING, ShutdownBegan): _shutdown_running,
    (Phase.RUNNING, GraceExpired): _to(Phase.ABANDONED, LeaveThread()),
    # Ending: the thread's last writes, then the task's. An error after the end
    # was claimed claims it again.
    (Phase.ENDING, MessageStored): _stay(Refused()),
    (Phase.ENDING, EndAsked): _stay(Claimed()),
    (Phase.ENDING, ThreadReturned): _stay(),
    (Phase.ENDING, Deleted): _mark_deleted,
    (Phase.ENDING, GraceExpired): _to(Phase.ABANDONED, LeaveThread()),
    (Phase.ENDING, TaskEnded): _to(Phase.DONE),
    # Abandoned: its thread may still ask to end; it is told to.
    (Phase.ABANDONED, MessageStored): _stay(Refused()),
    (Phase.ABANDONED, EndAsked): _stay(Claimed()),
    (Phase.ABANDONED, ThreadReturned): _stay(),
    (Phase.ABANDONED, LeftQueue): _stay(),
    (Phase.ABANDONED, TokenGranted): _stay(),
    (Phase.ABANDONED, Enqueued): lambda state, trigger: (_replace(state, enqueued=True), ()),
    (Phase.ABANDONED, QueueRefused): _stay(),
    (Phase.ABANDONED, Deleted): _mark_deleted,
    (Phase.ABANDONED, GraceExpired): _stay(),
    (Phase.ABANDONED, TaskEnded): _to(Phase.DONE),
}
# A pause, an interrupt or shutdown finds nothing left to stop in these phases.
for _phase in (Phase.REFUSED, Phase.LEAVING, Phase.ENDING, Phase.ABANDONED):
    for _trigger in _IGNORED_LATE:
        TABLE[(_phase, _trigger)] = _stay()


def transition(state: RunState, trigger: Trigger) -> Outcome:
    """The next state, and what it owes. Raises IllegalTransition for a pair the
    table does not have."""
    rule = TABLE.get((state.phase, type(trigger)))
    if rule is None:
        raise IllegalTransition(state.phase, trigger)
    return rule(state, trigger)


# -- what clients see -----------------------------------------------------------

WAITING_PHASES = frozenset({Phase.RESERVED, Phase.REFUSED, Phase.QUEUED, Phase.LEAVING})
# A run queued or running that will read a message sent now (the phases whose
# rows answer MessageStored with Accepted, bar a pause not yet taken).
IN_FLIGHT_PHASES = frozenset({Phase.RESERVED, Phase.QUEUED, Phase.RUNNING})


def visible_status(stored: Status, state: RunState | None) -> Status:
    """The status a client sees, from the stored one and the run's phase. A run's
    final status is stored a moment before its run is gone, so the phase counts
    only while the stored status says the run is active."""
    if state is None or stored not in ("queued", "running"):
        return stored
    # A run with its token reads as running before its thread has stored so.
    return "queued" if state.phase in WAITING_PHASES else "running"
