"""The chat history an LLM agent is given, kept as the conversation's log has it.

The agent keeps a :class:`History`: seeded from the stored events when it is
built for a conversation that already has some (after a restart, say), and
grown by each step. Every request is built from it afresh by :meth:`History.messages`,
which puts each tool result right after the call it answers, wherever the log
has it (a call under way when its run was interrupted answers later), and cuts
the oldest turns to fit, never parting a call from its result.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import msgspec

from laneway.agents.base import ToolCall, ToolResult
from laneway.models import Event

# What the model is told of a call that has no result yet.
NO_RESULT = "error: no result: the call was still under way when its step was interrupted"


class _User(msgspec.Struct, frozen=True):
    text: str


class _Assistant(msgspec.Struct, frozen=True):
    text: str
    calls: list[ToolCall]


class _Result(msgspec.Struct, frozen=True):
    call_id: str
    content: str


_Entry = _User | _Assistant | _Result


def result_content(output: Any = None, error: str | None = None) -> str:
    """A tool result as the model reads it: text as it is, other values as JSON."""
    if error is not None:
        return f"error: {error}"
    if isinstance(output, str):
        return output
    return json.dumps(output, ensure_ascii=False)


class History:
    def __init__(self) -> None:
        self._entries: list[_Entry] = []

    def add_user(self, text: str) -> None:
        self._entries.append(_User(text))

    def add_assistant(self, text: str, calls: list[ToolCall]) -> None:
        self._entries.append(_Assistant(text, calls))

    def forget_last(self, count: int) -> None:
        """Take back the last ``count`` entries added."""
        if count:
            del self._entries[-count:]

    def add_results(self, results: Iterable[ToolResult]) -> None:
        self._entries += [_Result(r.id, result_content(r.output, r.error)) for r in results]

    def add_events(self, events: Iterable[Event]) -> None:
        """Take stored events in seq order: messages, tool calls and results.

        A step's message and tool calls are stored together, message first, so a
        tool call right after an agent message belongs to it.
        """
        for event in events:
            data = event.data
            if event.kind == "message" and event.source == "user":
                self.add_user(str(data.get("text", "")))
            elif event.kind == "message" and event.source == "agent":
                self.add_assistant(str(data.get("text", "")), [])
            elif event.kind == "tool_call":
                call = ToolCall(
                    str(data.get("call_id", "")),
                    str(data.get("name", "")),
                    dict(data.get("arguments") or {}),
                )
                last = self._entries[-1] if self._entries else None
                if isinstance(last, _Assistant):
                    self._entries[-1] = _Assistant(last.text, [*last.calls, call])
                else:
                    self.add_assistant("", [call])
            elif event.kind == "tool_result":
                content = result_content(data.get("output"), data.get("error"))
                self._entries.append(_Result(str(data.get("call_id", "")), content))

    def messages(self, system_prompt: str | None, limit: int) -> list[dict[str, Any]]:
        """The chat messages of a request: the system prompt, then the newest turns
        that fit in ``limit`` messages, from a user message on (the last turn
        always, even if larger)."""
        turns = self._turns()
        kept: list[list[dict[str, Any]]] = []
        size = 0
        for turn in reversed(turns):
            if kept and size + len(turn) > limit:
                break
            kept.append(turn)
            size += len(turn)
        kept.reverse()
        # Begin with the user, as many chat templates require after the system
        # prompt: a cut that leaves the model's answer first drops it too.
        first_user = next((i for i, turn in enumerate(kept) if turn[0]["role"] == "user"), None)
        if len(kept) < len(turns) and first_user is not None:
            kept = kept[first_user:]
        head = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return head + [m for turn in kept for m in turn]

    def _turns(self) -> list[list[dict[str, Any]]]:
        """The history as the units that can be cut: a user message, or an
        assistant message together with a result for each of its calls."""
        answers = self._answers()
        turns: list[list[dict[str, Any]]] = []
        for index, entry in enumerate(self._entries):
            if isinstance(entry, _User):
                turns.append([{"role": "user", "content": entry.text}])
            elif isinstance(entry, _Assistant):
                turns.append(_assistant_turn(entry, answers.get(index, {})))
        return turns

    def _answers(self) -> dict[int, dict[str, str]]:
        """Each result, by the entry of the latest call before it with its id that
        has no result yet (a model may use the same ids in every step)."""
        answers: dict[int, dict[str, str]] = {}
        open_calls: dict[str, int] = {}
        for index, entry in enumerate(self._entries):
            if isinstance(entry, _Assistant):
                open_calls.update((call.id, index) for call in entry.calls)
            elif isinstance(entry, _Result) and entry.call_id in open_calls:
                owner = open_calls.pop(entry.call_id)
                answers.setdefault(owner, {})[entry.call_id] = entry.content
        return answers


def _assistant_turn(entry: _Assistant, answers: dict[str, str]) -> list[dict[str, Any]]:
    message: dict[str, Any] = {"role": "assistant", "content": entry.text or None}
    if not entry.calls:
        message["content"] = entry.text
        return [message]
    message["tool_calls"] = [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
        }
        for call in entry.calls
    ]
    results = [
        {"role": "tool", "tool_call_id": call.id, "content": answers.get(call.id, NO_RESULT)}
        for call in entry.calls
    ]
    return [message, *results]
