"""``sim``: a deterministic synthetic workload for demos, tests and the benchmark.

Each step blocks for ``think_ms`` (as an LLM call would), burns ``cpu_ms`` of
pure-Python CPU (holding the GIL, as parsing and prompt building do), and asks
for ``tools_per_step`` tool calls that each block for ``tool_ms``. With
``deltas``, it streams its message during the think as an LLM streams tokens:
in that many pieces (at most one a character), evenly spread over ``think_ms``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from laneway.agents.base import AgentConfigError, StepResult, ToolCall, Turn

Millis = Annotated[float, msgspec.Meta(ge=0, le=3_600_000)]


class SimConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    steps: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 3
    think_ms: Millis = 0
    cpu_ms: Millis = 0
    tools_per_step: Annotated[int, msgspec.Meta(ge=0, le=256)] = 0
    tool_ms: Millis = 0
    fail_at_step: Annotated[int, msgspec.Meta(ge=1)] | None = None
    deltas: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0


def burn_cpu(ms: float) -> None:
    """Spin in pure Python for ``ms`` of wall time, holding the GIL as real work does."""
    deadline = time.perf_counter() + ms / 1000
    n = 0
    while time.perf_counter() < deadline:
        for i in range(200):
            n += i * i


def split_text(text: str, pieces: int) -> list[str]:
    """``text`` in ``pieces`` non-empty pieces (fewer if it is shorter), whose
    lengths differ by one at most."""
    count = min(pieces, len(text))
    if not count:
        return []
    size, longer = divmod(len(text), count)
    bounds = [i * size + min(i, longer) for i in range(count + 1)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


class SimAgent:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._steps_taken = 0
        # Set by cancel(): ends the current step's think at once.
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop the step in flight: its think ends now, and it asks for no tools."""
        self._cancelled.set()

    def step(self, turn: Turn) -> StepResult:
        c = self.config
        self._steps_taken += 1
        n = self._steps_taken
        if c.fail_at_step is not None and n == c.fail_at_step:
            raise RuntimeError(f"sim failed at step {n} as configured")
        text = f"step {n} of {c.steps}"
        if turn.new_messages:
            text += f" (read {len(turn.new_messages)} new message(s))"
        # Cleared once the step has seen it, not when a step begins: a cancel
        # that came as the step began must still end its think.
        if self._think(text, turn.emit_delta):
            self._cancelled.clear()
            return StepResult(messages=[f"{text} interrupted"])
        if c.cpu_ms:
            burn_cpu(c.cpu_ms)
        # Named by the conversation's step, which a restart does not reset, so
        # that call ids stay unique within the conversation.
        calls = [
            ToolCall(id=f"s{turn.step}t{i}", name="sleep", arguments={"ms": c.tool_ms})
            for i in range(c.tools_per_step)
        ]
        return StepResult(messages=[text], tool_calls=calls, done=n >= c.steps)

    def _think(self, text: str, emit_delta: Callable[[str], None] | None) -> bool:
        """Block for think_ms, emitting ``text`` in pieces over it if asked to;
        True if cancelled meanwhile."""
        think_s = self.config.think_ms / 1000
        if emit_delta is None or not self.config.deltas:
            return bool(think_s) and self._cancelled.wait(think_s)
        pieces = split_text(text, self.config.deltas)
        start = time.monotonic()
        for i, piece in enumerate(pieces, 1):
            # Against a schedule, so that waits' overheads do not add up.
            left = start + think_s * i / len(pieces) - time.monotonic()
            if think_s and self._cancelled.wait(max(0.0, left)):
                return True
            emit_delta(piece)
        return False

    def call_tool(self, call: ToolCall) -> Any:
        if call.name != "sleep":
            raise LookupError(f"sim has no tool {call.name!r}")
        ms = float(call.arguments.get("ms", 0))
        time.sleep(ms / 1000)
        return {"slept_ms": ms}


def make_sim(config: dict[str, Any]) -> SimAgent:
    try:
        return SimAgent(msgspec.convert(config, SimConfig))
    except msgspec.ValidationError as exc:
        raise AgentConfigError(f"sim config: {exc}") from exc
