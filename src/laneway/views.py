"""A conversation as clients see it: the stored record and its run's live state."""

from __future__ import annotations

from laneway.lanes import Lane
from laneway.lifecycle import WAITING_PHASES, visible_status
from laneway.models import ACTIVE_STATUSES, Conversation, ConversationRecord, Usage
from laneway.runhandle import RunHandle


def conversation_view(
    record: ConversationRecord, handle: RunHandle | None, run_lane: Lane
) -> Conversation:
    """``handle`` is the conversation's run, if it has one; ``run_lane`` tells its
    place in the queue."""
    # A run's final status is committed a moment before its handle goes, so the
    # handle's live fields only count while the record says it is active.
    state = handle.state if handle is not None and record.status in ACTIVE_STATUSES else None
    position = None
    if state is not None and state.phase in WAITING_PHASES:
        position = run_lane.position(record.id)
    return Conversation(
        id=record.id,
        title=record.title,
        status=visible_status(record.status, state),
        agent=record.agent,
        max_steps=record.max_steps,
        created_at=record.created_at,
        updated_at=record.updated_at,
        steps_done=record.steps_done,
        queue_position=position,
        pause_requested=state is not None and state.pause is not None,
        last_error=record.last_error,
        usage=Usage(record.prompt_tokens, record.completion_tokens),
    )
