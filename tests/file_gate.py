"""An agent held by a file, for runs inside a server process: a test cannot
reach a threading.Event there, but it can create a file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from laneway.agents import StepResult, ToolCall, Turn

GUARD_S = 30.0  # a step never blocks longer than this, so a failing test cannot hang
POLL_S = 0.01
NAME = "tests.file_gate:make_file_gate"


class FileGateAgent:
    """Each step waits until its file exists, echoes new messages, then finishes."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.path = Path(str(config["path"]))

    def step(self, turn: Turn) -> StepResult:
        deadline = time.monotonic() + GUARD_S
        while not self.path.exists() and time.monotonic() < deadline:
            time.sleep(POLL_S)
        return StepResult(messages=list(turn.new_messages) or [f"step {turn.step}"], done=True)

    def call_tool(self, call: ToolCall) -> Any:
        raise LookupError(call.name)


def make_file_gate(config: dict[str, Any]) -> FileGateAgent:
    return FileGateAgent(config)
