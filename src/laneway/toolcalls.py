"""A step's tool calls, run in parallel on the tool lane, and stoppable.

The calls run as tasks of the service's task group, not of the run, so that an
interrupt can stop the run's wait for them at once: a call still waiting for a
tool token is then not run, and says so; a call under way cannot be killed (it
is a thread), so it keeps its token until it returns, and its result is stored
then, after the run has ended, and given to the conversation's next step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec

from laneway.agents import Agent, ToolCall, ToolResult
from laneway.lanes import Lane, LaneFull
from laneway.store.base import EventStore, NotFound, StoreUnavailable

INTERRUPTED = "not run: interrupted"

Spawn = Callable[..., object]
LateResult = Callable[[ToolResult], Awaitable[None]]


class ToolCalls:
    """One step's calls; :meth:`run` on the loop, :meth:`interrupt` from it."""

    def __init__(
        self,
        calls: list[ToolCall],
        agent: Agent,
        *,
        conversation_id: str,
        store: EventStore,
        tool_lane: Lane,
        io_lane: Lane,
        spawn: Spawn,
        late: LateResult,
    ) -> None:
        self.calls = calls
        self.agent = agent
        self.cid = conversation_id
        self.store = store
        self.tool_lane = tool_lane
        self.io_lane = io_lane
        self.spawn = spawn
        self.late = late
        self.results: list[ToolResult | None] = [None] * len(calls)
        self._begun = [False] * len(calls)
        self._waits = [anyio.CancelScope() for _ in calls]
        self._pending = len(calls)
        self._settled = anyio.Event()
        self.interrupted = False

    async def run(self) -> list[ToolResult]:
        """Start every call and wait until all have returned or an interrupt
        came; the results so far, in call order (not those still under way)."""
        for index, call in enumerate(self.calls):
            self.spawn(self._one, index, call)
        if self.calls:
            await self._settled.wait()
        return [r for r in self.results if r is not None]

    def interrupt(self) -> None:
        """Stop waiting: calls not begun are not run; calls under way go on."""
        if self._settled.is_set():
            return
        self.interrupted = True
        for index, call in enumerate(self.calls):
            if not self._begun[index] and self.results[index] is None:
                self.results[index] = ToolResult(call.id, call.name, error=INTERRUPTED)
                self._waits[index].cancel()
        self._settled.set()

    async def _one(self, index: int, call: ToolCall) -> None:
        try:
            result = await self._call(index, call)
        except LaneFull as exc:
            result = ToolResult(call.id, call.name, error=str(exc))
        except Exception as exc:
            result = ToolResult(call.id, call.name, error=f"{type(exc).__name__}: {exc}")
        if result is None:
            pass  # not run: interrupt() has answered it
        elif not self.interrupted:
            self.results[index] = result
        else:
            # Under way when the run was interrupted: stored now, on its own.
            with anyio.CancelScope(shield=True):
                await self.late(result)
        self._pending -= 1
        if self._pending == 0:
            self._settled.set()

    async def _call(self, index: int, call: ToolCall) -> ToolResult | None:
        """The call's result; None if an interrupt came before it began."""
        async with contextlib.AsyncExitStack() as stack:
            with self._waits[index]:
                noted = await self._note_if_waiting(call)
                await stack.enter_async_context(self.tool_lane.hold())
            # Interrupted while waiting, or as the token came (it goes back unused).
            if self.results[index] is not None:
                return None
            self._begun[index] = True
            # Left behind only when the service's task group ends at shutdown.
            output = await self.tool_lane.to_thread(
                self._call_tool, call, noted, abandon_on_cancel=True
            )
        return ToolResult(call.id, call.name, output=_jsonable(output))

    async def _note_if_waiting(self, call: ToolCall) -> bool:
        """A call that will wait for a tool token is noted first, so that a crash
        meanwhile tells it "not run" rather than "lost". One that finds a token
        takes it with no await between the look and the take, and costs nothing;
        one that cannot be noted (a full io lane, a failing store) is only ever
        called "lost", the word that claims less."""
        if self.tool_lane.free_tokens():
            return False
        try:
            await self.io_lane.run_sync(self.store.note_tools_waiting, self.cid, [call.id])
        except (LaneFull, NotFound, StoreUnavailable):
            return False
        return True

    def _call_tool(self, call: ToolCall, noted: bool) -> Any:
        """On the tool lane: a call noted as waiting is noted as begun, then made."""
        if noted:
            self.store.note_tool_begun(self.cid, call.id)
        return self.agent.call_tool(call)


def tool_result_data(result: ToolResult) -> dict[str, Any]:
    data: dict[str, Any] = {"call_id": result.id, "name": result.name}
    if result.error is not None:
        data["error"] = result.error
    else:
        data["output"] = result.output
    return data


def _jsonable(value: Any) -> Any:
    """Tool output goes into a JSON event; what JSON cannot hold is kept as text."""
    try:
        msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError):
        return repr(value)
    return value
