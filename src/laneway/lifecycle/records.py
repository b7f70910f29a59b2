"""The records of the run lifecycle: triggers (what happened to a run) and
effects (what a transition owes). Plain frozen msgspec Structs, as hypercorn's
protocol events are dataclasses: data, no behaviour."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeVar

import msgspec

from laneway.models import Status

# How a run thread asks to end: "done" (the agent finished; it goes on if
# messages are unread), "stop" (max_steps, error, stuck: unread messages start
# a new run in the same token), "pause" (unread messages wait for the next run;
# declined if a message has withdrawn the pause) or "give_up" (no agent to run:
# unread messages wait, since a new run would fail the same way).
EndRequest = Literal["done", "stop", "pause", "give_up"]


# -- triggers -------------------------------------------------------------------


class Trigger(msgspec.Struct, frozen=True):
    """Something that happened to a run."""


class Enqueued(Trigger, frozen=True):
    """The run is in the run lane's queue (or has its token): admission can no
    longer fail."""


class QueueRefused(Trigger, frozen=True):
    """The queue was full by the time "queued" was stored."""


class TokenGranted(Trigger, frozen=True):
    pass


class LeftQueue(Trigger, frozen=True):
    """Its wait for a token ended without one."""


class PauseAsked(Trigger, frozen=True):
    pass


class InterruptAsked(Trigger, frozen=True):
    """Stop the step in flight now; ``resume``: then go on at once (a message
    sent with ``if_running="interrupt"``), else end the run paused."""

    resume: bool = False


class MessageStored(Trigger, frozen=True):
    """A user message asking for a run was stored with ``seq``."""

    seq: int


class EndAsked(Trigger, frozen=True):
    """The run thread asks to end, having read the messages up to ``read_seq``."""

    read_seq: int
    request: EndRequest


class ThreadReturned(Trigger, frozen=True):
    """The run's thread has returned; ``failed``: by raising (its writes failed),
    so the run ends whatever it had claimed."""

    failed: bool = False


class Deleted(Trigger, frozen=True):
    pass


class ShutdownBegan(Trigger, frozen=True):
    pass


class GraceExpired(Trigger, frozen=True):
    pass


class TaskEnded(Trigger, frozen=True):
    """The run's task has written all it owed and ends."""


# -- what a transition owes -----------------------------------------------------


class Effect(msgspec.Struct, frozen=True):
    """Something a transition owes: an action, or the answer to the caller."""


class CancelWait(Effect, frozen=True):
    """End the run's wait for a token."""


class CancelStep(Effect, frozen=True):
    """Ask the agent's step in flight to stop, and stop waiting for tool calls."""


class LeaveThread(Effect, frozen=True):
    """Stop waiting for the run's thread (shutdown past its grace period)."""


class StartAgain(Effect, frozen=True):
    """Run once more in the same token, for messages the run stopped with unread."""


class WriteStatus(Effect, frozen=True):
    """The run's task owes this status; the run thread writes every other one."""

    status: Status
    reason: str


class PutBack(Effect, frozen=True):
    """Restore the status the conversation had before "queued"."""

    reason: str


class JoinShutdownBatch(Effect, frozen=True):
    """Shutdown writes this run's pause, with the others', in one write."""


class Accepted(Effect, frozen=True):
    """The run will read the message (once it is in the queue, if ``settling``)."""

    settling: bool = False


class Refused(Effect, frozen=True):
    """The run will not read the message: wait for it to go, then start another."""


class Claimed(Effect, frozen=True):
    """The run may end; a pause ends it with ``reason``."""

    reason: str = ""


class Declined(Effect, frozen=True):
    """The run must go on: a message came, or a pause was withdrawn."""


E = TypeVar("E", bound=Effect)


def owed(effects: Sequence[Effect], kind: type[E]) -> E | None:
    """The effect of ``kind`` among what a transition owes, if it owes one."""
    return next((e for e in effects if isinstance(e, kind)), None)
