"""The default agent: repeats each new user message once, then finishes."""

from __future__ import annotations

from typing import Any

from laneway.agents.base import AgentConfigError, StepResult, ToolCall, Turn


class EchoAgent:
    def step(self, turn: Turn) -> StepResult:
        return StepResult(messages=list(turn.new_messages), done=True)

    def call_tool(self, call: ToolCall) -> Any:
        raise LookupError(f"echo has no tool {call.name!r}")


def make_echo(config: dict[str, Any]) -> EchoAgent:
    if config:
        raise AgentConfigError(f"echo takes no config, got {sorted(config)}")
    return EchoAgent()
