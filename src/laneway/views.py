"""A conversation as clients see it: the stored record and its run's live state."""

from __future__ import annotations

from laneway.lanes import Lane
from laneway.models import ACTIVE_STATUSES, Conversation, ConversationRecord, Status
from laneway.runner import RunHandle


def conversation_view(
    record: ConversationRecord, handle: RunHandle | None, run_lane: Lane
) -> Conversation:
    """``handle`` is the conversation's run, if it has one; ``run_lane`` tells its
    place in the queue."""
    # A run's final status is committed a moment before its handle goes, so the
    # handle's live fields only count while the record says it is active.
    if record.status not in ACTIVE_STATUSES:
        handle = None
    position = None
    status: Status = record.status
    if handle is not None and not handle.admitted:
        position = run_lane.position(record.id)
    elif handle is not None and status == "queued":
        # It has its token; its thread has not yet stored "running".
        status = "running"
    return Conversation(
        id=record.id,
        title=record.title,
        status=status,
        agent=record.agent,
        max_steps=record.max_steps,
        created_at=record.created_at,
        updated_at=record.updated_at,
        steps_done=record.steps_done,
        queue_position=position,
        pause_requested=handle.pause_requested if handle is not None else False,
        last_error=record.last_error,
    )
