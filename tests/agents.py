"""Agents for tests, enabled by import path like any third-party agent."""

from __future__ import annotations

import threading
from typing import Any

from laneway.agents import StepResult, ToolCall, Turn

GUARD_S = 30.0  # a step never blocks longer than this, so a failing test cannot hang
GATES: dict[str, threading.Event] = {}
PEAKS: dict[str, int] = {}
# The turns each ToolThenRecordAgent was given, by its key.
TURNS: dict[str, list[Turn]] = {}
# Gates whose breakable agent can no longer be built, as when a plugin has gone.
BROKEN: set[str] = set()
_lock = threading.Lock()


def gate(name: str) -> threading.Event:
    with _lock:
        return GATES.setdefault(name, threading.Event())


class GateAgent:
    """Each step waits for its gate, echoes new messages, then finishes."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.gate = gate(str(config["gate"]))
        self.entered = gate(str(config["gate"]) + ":entered")
        self.fail = bool(config.get("fail", False))

    def step(self, turn: Turn) -> StepResult:
        self.entered.set()
        self.gate.wait(GUARD_S)
        if self.fail:
            raise RuntimeError("failed after the gate")
        return StepResult(messages=list(turn.new_messages) or [f"step {turn.step}"], done=True)

    def call_tool(self, call: ToolCall) -> Any:
        raise LookupError(call.name)


class ParallelToolsAgent:
    """One step asking for ``n`` tool calls that record how many ran at once."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.n = int(config["n"])
        self.key = str(config["key"])
        self.active = 0
        self.barrier = threading.Barrier(int(config.get("meet", 1)), timeout=GUARD_S)

    def step(self, turn: Turn) -> StepResult:
        if turn.tool_results:
            return StepResult(messages=[str([r.output for r in turn.tool_results])], done=True)
        calls = [ToolCall(id=f"c{i}", name="probe", arguments={"i": i}) for i in range(self.n)]
        return StepResult(tool_calls=calls)

    def call_tool(self, call: ToolCall) -> Any:
        with _lock:
            self.active += 1
            PEAKS[self.key] = max(PEAKS.get(self.key, 0), self.active)
        try:
            # With "meet" > 1 the calls only get past this point together, which
            # proves they ran in parallel rather than one after another.
            self.barrier.wait()
        finally:
            with _lock:
                self.active -= 1
        return call.arguments["i"] * 10


class ToolThenRecordAgent:
    """Asks for one tool call in its first step; records every turn it is given."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.turns = TURNS.setdefault(str(config["key"]), [])
        # Its first step waits for this gate, if named.
        self.gate = gate(str(config["gate"])) if "gate" in config else None

    def step(self, turn: Turn) -> StepResult:
        self.turns.append(turn)
        if turn.step == 1:
            if self.gate is not None:
                self.gate.wait(GUARD_S)
            return StepResult(tool_calls=[ToolCall(id="c1", name="times10", arguments={"x": 4})])
        return StepResult(messages=["done"], done=True)

    def call_tool(self, call: ToolCall) -> Any:
        return call.arguments["x"] * 10


def make_breakable(config: dict[str, Any]) -> GateAgent:
    if config["gate"] in BROKEN:
        raise RuntimeError("this agent can no longer be built")
    return GateAgent(config)


def make_tool_then_record(config: dict[str, Any]) -> ToolThenRecordAgent:
    return ToolThenRecordAgent(config)


def make_gate(config: dict[str, Any]) -> GateAgent:
    return GateAgent(config)


def make_parallel(config: dict[str, Any]) -> ParallelToolsAgent:
    return ParallelToolsAgent(config)


ALLOWED = [
    "tests.agents:make_gate",
    "tests.agents:make_parallel",
    "tests.agents:make_breakable",
    "tests.agents:make_tool_then_record",
]
