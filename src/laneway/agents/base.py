"""What an agent is: a blocking ``step()`` that answers one turn at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from laneway.models import Usage as Usage  # part of the agent protocol


class ToolCall(msgspec.Struct, frozen=True):
    """A tool call a step asks for; ``id`` pairs it with its result."""

    id: str
    name: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)


class ToolResult(msgspec.Struct, frozen=True):
    """The outcome of one tool call: ``output`` on success, ``error`` if it raised."""

    id: str
    name: str
    output: Any = None
    error: str | None = None


class Turn(msgspec.Struct, frozen=True):
    """What a step sees.

    ``step`` counts the steps of this conversation from 1. ``new_messages`` holds
    the user messages that arrived since the previous step; ``tool_results`` the
    results of the previous step's tool calls, in call order.

    ``emit_delta``, when not None, sends a piece of the step's text to the live
    subscribers that asked for deltas (an LLM's tokens as they stream). Call it
    from the step's thread with each piece as it is produced: it returns at once,
    costs next to nothing when nobody listens, and is best-effort. The pieces
    are not stored; the message the step returns must hold the whole text.
    """

    step: int
    new_messages: list[str]
    tool_results: list[ToolResult]
    emit_delta: Callable[[str], None] | None = None


class StepResult(msgspec.Struct, frozen=True):
    """What a step produced: agent messages, tool calls to run in parallel, and
    whether the agent has finished (new user messages start another step)."""

    messages: list[str] = msgspec.field(default_factory=list)
    tool_calls: list[ToolCall] = msgspec.field(default_factory=list)
    done: bool = False
    usage: Usage | None = None


class Agent(Protocol):
    """One instance per conversation run. Both methods block and run in threads:
    ``step`` in the run's thread, ``call_tool`` on the tool lane, several at once.

    An agent may also have ``cancel()``: called from the event loop when the run
    is interrupted, it must return at once and make the step in flight return
    soon (for example by closing its HTTP response). What that step then returns
    is stored, but its tool calls are not run; if it raises, nothing of it is
    stored. An agent without ``cancel`` is interrupted at the end of its step.

    A step that produces its text bit by bit may pass each bit to
    ``turn.emit_delta`` as it comes (see :class:`Turn`); one that ignores it
    loses nothing but the live view.

    An agent may also have ``resume(events)``: called once, before its first
    step, when it is made for a conversation that already has a history (after
    a restart, say), with the stored messages, tool calls and tool results in
    seq order, but for the user messages its first step is given as new.
    """

    def step(self, turn: Turn) -> StepResult: ...

    def call_tool(self, call: ToolCall) -> Any: ...


class AgentFactory(Protocol):
    def __call__(self, config: dict[str, Any]) -> Agent: ...


class AgentConfigError(ValueError):
    """An agent spec that names no agent, or whose config the agent rejects."""
