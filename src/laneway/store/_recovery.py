"""What recovering interrupted runs writes, the same for every store: the
results owed to tool calls a cut-off run left unanswered, and the records of
the runs queued again.

A run cut off mid-step may leave tool calls with no result: killed while they
ran, or before they could start. Every such call gets a result saying so, in
the same transaction as the pause, so that every ``tool_call`` in the log has
exactly one ``tool_result``: OpenAI-compatible providers refuse a history in
which a call has no answer. A call still noted as waiting for a tool token
(``tool_waits``) had not begun, and is "not run"; any other may have done its
work, and is "lost". (A call stored a moment before it is handed to the tool
lane is "lost" too: the word that claims less.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import msgspec

from laneway.models import ConversationRecord, NewEvent
from laneway.store._append import Append

# The tool events of one conversation, in seq order: (kind, data as JSON).
TOOL_EVENTS_WHERE = "kind IN ('tool_call', 'tool_result')"

_decode = msgspec.json.Decoder(dict[str, Any]).decode


def unanswered_tool_calls(tool_events: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """The data of each tool call among ``tool_events`` (kind and JSON data, in
    seq order) that no result answers."""
    calls: list[dict[str, Any]] = []
    answers: Counter[str] = Counter()
    for kind, data in tool_events:
        decoded = _decode(data)
        if kind == "tool_call":
            calls.append(decoded)
        else:
            answers[str(decoded.get("call_id"))] += 1
    open_calls = []
    for call in calls:
        call_id = str(call.get("call_id"))
        if answers[call_id]:
            answers[call_id] -= 1
        else:
            open_calls.append(call)
    return open_calls


def tool_answers(
    tool_events: Iterable[tuple[str, str]], waiting: Collection[str], reason: str
) -> list[NewEvent]:
    """A result for each unanswered call: "not run: <reason>" if it was still
    ``waiting`` for a tool token, else "lost: <reason>"."""
    results = []
    for call in unanswered_tool_calls(tool_events):
        call_id = str(call.get("call_id"))
        fate = "not run" if call_id in waiting else "lost"
        data = {"call_id": call_id, "name": call.get("name"), "error": f"{fate}: {reason}"}
        results.append(NewEvent("tool_result", "tool", data))
    return results


def requeued_records(
    records: Sequence[ConversationRecord], written: Sequence[Append]
) -> list[ConversationRecord]:
    """``records``, in their order, as the status events ``written`` for them left them."""
    by_id = {request.conversation_id: request for request in written}
    return [
        msgspec.structs.replace(
            record, last_seq=by_id[record.id].first_seq, updated_at=by_id[record.id].now
        )
        for record in records
    ]
