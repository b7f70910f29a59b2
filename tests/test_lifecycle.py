"""The run lifecycle state machine, fed trigger records with no I/O and no threads."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from laneway.lifecycle import (
    INTERRUPT_REASON,
    PAUSE_REASON,
    QUEUED_REASON,
    TABLE,
    Accepted,
    CancelStep,
    CancelWait,
    Claimed,
    Declined,
    Deleted,
    EndAsked,
    Enqueued,
    GraceExpired,
    IllegalTransition,
    InterruptAsked,
    JoinShutdownBatch,
    LeaveThread,
    LeftQueue,
    MessageStored,
    PauseAsked,
    Phase,
    PutBack,
    QueueRefused,
    Refused,
    RunState,
    ShutdownBegan,
    StartAgain,
    TaskEnded,
    ThreadReturned,
    TokenGranted,
    Trigger,
    WriteStatus,
    transition,
    visible_status,
)

TRIGGERS: list[Trigger] = [
    Enqueued(),
    QueueRefused(),
    TokenGranted(),
    LeftQueue(),
    PauseAsked(),
    InterruptAsked(),
    InterruptAsked(resume=True),
    MessageStored(seq=7),
    EndAsked(read_seq=3, request="done"),
    EndAsked(read_seq=3, request="stop"),
    EndAsked(read_seq=3, request="pause"),
    EndAsked(read_seq=3, request="give_up"),
    ThreadReturned(),
    ThreadReturned(failed=True),
    Deleted(),
    ShutdownBegan(),
    GraceExpired(),
    TaskEnded(),
]


def at(phase: Phase, **fields: object) -> RunState:
    enqueued = phase not in (Phase.RESERVED, Phase.REFUSED)
    return msgspec.structs.replace(RunState(phase=phase, enqueued=enqueued), **fields)


def run(state: RunState, *triggers: Trigger) -> tuple[RunState, tuple[object, ...]]:
    effects: tuple[object, ...] = ()
    for trigger in triggers:
        state, effects = transition(state, trigger)
    return state, effects


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.name)
@pytest.mark.parametrize("trigger", TRIGGERS, ids=lambda t: repr(t))
def test_every_pair_is_in_the_table_or_raises_naming_both(phase: Phase, trigger: Trigger) -> None:
    state = at(phase)
    if (phase, type(trigger)) in TABLE:
        after, effects = transition(state, trigger)
        assert isinstance(after, RunState)
        assert all(isinstance(e, msgspec.Struct) for e in effects)
        # Nothing comes back from the end, and the done phase is never left.
        assert after.phase is not Phase.RESERVED or phase is Phase.RESERVED
    else:
        with pytest.raises(IllegalTransition) as raised:
            transition(state, trigger)
        assert phase.name in str(raised.value)
        assert type(trigger).__name__ in str(raised.value)


def test_done_takes_no_trigger() -> None:
    assert not [pair for pair in TABLE if pair[0] is Phase.DONE]


def test_a_run_goes_from_reserved_through_the_queue_to_done() -> None:
    state, _ = run(RunState(), Enqueued(), TokenGranted())
    assert (state.phase, state.enqueued) == (Phase.RUNNING, True)
    state, effects = run(state, EndAsked(0, "done"))
    assert (state.phase, effects) == (Phase.ENDING, (Claimed(),))
    state, _ = run(state, ThreadReturned(), TaskEnded())
    assert state.phase is Phase.DONE


def test_a_queue_that_refuses_the_run_puts_the_status_back() -> None:
    state, effects = run(RunState(), QueueRefused())
    assert (state.phase, effects) == (Phase.REFUSED, (PutBack("run queue full"),))
    assert transition(state, MessageStored(5))[1] == (Refused(),)
    assert run(state, TaskEnded())[0].phase is Phase.DONE


@pytest.mark.parametrize(
    ("trigger", "reason"), [(PauseAsked(), QUEUED_REASON), (InterruptAsked(), INTERRUPT_REASON)]
)
def test_pause_or_interrupt_takes_a_queued_run_out_with_its_reason(
    trigger: Trigger, reason: str
) -> None:
    state, effects = transition(at(Phase.QUEUED), trigger)
    assert (state.phase, effects) == (Phase.LEAVING, (CancelWait(),))
    # A token granted as the wait was cancelled changes nothing: it still leaves.
    state, _ = run(state, TokenGranted())
    state, effects = transition(state, LeftQueue())
    assert effects == (WriteStatus("paused", reason),)


def test_a_pause_while_queued_is_being_written_takes_effect_once_queued() -> None:
    state, effects = transition(RunState(), PauseAsked())
    assert (state.phase, effects) == (Phase.RESERVED, (CancelWait(),))
    assert transition(state, MessageStored(4))[1] == (Refused(),)
    assert run(state, Enqueued())[0].phase is Phase.LEAVING


def test_an_interrupt_that_resumes_leaves_a_queued_run_alone() -> None:
    assert transition(at(Phase.QUEUED), InterruptAsked(resume=True)) == (at(Phase.QUEUED), ())


def test_a_message_to_a_reserved_run_is_accepted_once_it_is_settled() -> None:
    state, effects = transition(RunState(), MessageStored(9))
    assert effects == (Accepted(settling=True),)
    assert state.newest_message_seq == 9
    assert transition(at(Phase.QUEUED), MessageStored(9))[1] == (Accepted(),)


def test_a_message_withdraws_a_pause_not_yet_taken_unless_shutdown_or_delete() -> None:
    paused, _ = transition(at(Phase.RUNNING), PauseAsked())
    assert paused.pause == PAUSE_REASON
    state, effects = transition(paused, MessageStored(5))
    assert (state.pause, effects) == (None, (Accepted(),))
    # The thread saw the pause before the message withdrew it: it goes on.
    assert transition(state, EndAsked(5, "pause"))[1] == (Declined(),)
    for final in (ShutdownBegan(), Deleted()):
        state, _ = run(at(Phase.RUNNING), final)
        assert transition(state, MessageStored(5))[1] == (Refused(),)


def test_an_interrupt_cancels_the_step_and_ends_the_run_paused() -> None:
    state, effects = transition(at(Phase.RUNNING), InterruptAsked())
    assert effects == (CancelStep(),)
    assert (state.pause, state.interrupts) == (INTERRUPT_REASON, 1)
    state, effects = transition(state, EndAsked(0, "pause"))
    assert (state.phase, effects) == (Phase.ENDING, (Claimed(INTERRUPT_REASON),))


def test_an_interrupt_that_resumes_cancels_the_step_but_asks_for_no_pause() -> None:
    state, effects = transition(at(Phase.RUNNING), InterruptAsked(resume=True))
    assert effects == (CancelStep(),)
    assert (state.pause, state.interrupts) == (None, 1)


def test_the_first_pause_reason_stands() -> None:
    state, _ = run(at(Phase.RUNNING), InterruptAsked(), PauseAsked())
    assert state.pause == INTERRUPT_REASON


@pytest.mark.parametrize(
    ("request_", "unread", "claimed", "phase", "rerun"),
    [
        ("done", False, True, Phase.ENDING, False),
        ("done", True, False, Phase.RUNNING, False),
        ("stop", False, True, Phase.ENDING, False),
        ("stop", True, True, Phase.RUNNING, True),
        ("give_up", True, True, Phase.ENDING, False),
    ],
)
def test_ending_depends_on_unread_messages(
    request_: str, unread: bool, claimed: bool, phase: Phase, rerun: bool
) -> None:
    state = at(Phase.RUNNING, newest_message_seq=5 if unread else 3)
    after, effects = transition(state, EndAsked(3, request_))  # type: ignore[arg-type]
    assert (isinstance(effects[0], Claimed), after.phase, after.rerun) == (claimed, phase, rerun)


def test_a_run_that_stopped_with_messages_unread_starts_again_in_its_token() -> None:
    state, _ = run(at(Phase.RUNNING, newest_message_seq=5), EndAsked(3, "stop"))
    state, effects = transition(state, ThreadReturned())
    assert (state.phase, state.rerun, effects) == (Phase.RUNNING, False, (StartAgain(),))
    # Its thread failed (its last writes refused): it ends, whatever it claimed.
    state, _ = run(at(Phase.RUNNING, newest_message_seq=5), EndAsked(3, "stop"))
    state, effects = transition(state, ThreadReturned(failed=True))
    assert (state.phase, state.rerun, effects) == (Phase.ENDING, False, ())
    # Deleted meanwhile: it just ends.
    state, _ = run(at(Phase.RUNNING, newest_message_seq=5), EndAsked(3, "stop"), Deleted())
    assert transition(state, ThreadReturned()) == (
        msgspec.structs.replace(state, phase=Phase.ENDING, rerun=False),
        (),
    )


def test_shutdown_batches_the_queued_and_leaves_the_rest_to_their_tasks() -> None:
    state, effects = transition(at(Phase.QUEUED), ShutdownBegan())
    assert (state.phase, effects) == (Phase.LEAVING, (CancelWait(), JoinShutdownBatch()))
    assert transition(state, LeftQueue())[1] == ()
    reserved, effects = transition(RunState(), ShutdownBegan())
    assert effects == (CancelWait(),)
    assert run(reserved, Enqueued(), LeftQueue())[1] == (WriteStatus("paused", QUEUED_REASON),)
    running, effects = transition(at(Phase.RUNNING), ShutdownBegan())
    assert (running.pause, running.final, effects) == (PAUSE_REASON, True, ())


def test_past_the_grace_a_running_run_is_left_behind_and_told_to_end() -> None:
    state, effects = transition(at(Phase.RUNNING), GraceExpired())
    assert (state.phase, effects) == (Phase.ABANDONED, (LeaveThread(),))
    assert transition(state, EndAsked(0, "pause"))[1] == (Claimed(),)
    assert transition(state, MessageStored(3))[1] == (Refused(),)


def test_a_deleted_queued_run_leaves_and_writes_nothing() -> None:
    state, effects = transition(at(Phase.QUEUED), Deleted())
    assert (state.phase, effects) == (Phase.LEAVING, (CancelWait(),))
    assert transition(state, LeftQueue())[1] == ()


def test_deleting_a_running_run_stops_its_step() -> None:
    state, effects = transition(at(Phase.RUNNING), Deleted())
    assert (state.deleted, state.pause, effects) == (True, PAUSE_REASON, (CancelStep(),))


@pytest.mark.parametrize(
    ("stored", "phase", "seen"),
    [
        ("queued", Phase.RESERVED, "queued"),
        ("queued", Phase.QUEUED, "queued"),
        ("queued", Phase.LEAVING, "queued"),
        ("queued", Phase.RUNNING, "running"),
        ("running", Phase.ENDING, "running"),
        ("finished", Phase.ENDING, "finished"),
        ("paused", Phase.LEAVING, "paused"),
    ],
)
def test_the_status_seen_comes_from_the_phase_while_the_store_says_active(
    stored: str, phase: Phase, seen: str
) -> None:
    assert visible_status(stored, at(phase)) == seen  # type: ignore[arg-type]
    assert visible_status(stored, None) == stored  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TRIGGERS), max_size=40))
def test_any_sequence_of_legal_triggers_keeps_the_invariants(triggers: list[Trigger]) -> None:
    state = RunState()
    for trigger in triggers:
        if (state.phase, type(trigger)) not in TABLE:
            continue
        before = state
        state, effects = transition(state, trigger)
        # Once in the queue, always past admission; interrupts only count up.
        assert state.enqueued or not before.enqueued
        assert state.interrupts >= before.interrupts
        # A pause that shutdown or a delete asked for is never withdrawn.
        assert state.pause is not None or not (before.final and before.pause is not None)
        # A run that has left the queue or is ending never runs again.
        if before.phase in (Phase.LEAVING, Phase.ENDING, Phase.ABANDONED, Phase.REFUSED):
            assert state.phase is not Phase.RUNNING
        # Only a running run is ever asked to stop a step.
        if CancelStep() in effects:
            assert before.phase is Phase.RUNNING
        # Each trigger owes at most one answer.
        answers = [e for e in effects if isinstance(e, (Accepted, Refused, Claimed, Declined))]
        assert len(answers) <= 1
