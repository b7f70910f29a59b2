"""One conversation run: the blocking agent loop that lives in a run-lane thread.

The loop owns nothing on the event loop. It writes events straight to the store
(it is already off the loop), and crosses back into the loop only to publish
events to live subscribers (without waiting), to fan tool calls out on the tool
lane, and to agree with the service on when it ends, so that no message sent
during the run is ever lost. Each crossing wakes the loop and takes the GIL
from whatever request it is serving, so none is made that is not needed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.from_thread
import msgspec

from laneway.agents import Agent, StepResult, ToolCall, ToolResult, Turn, make_agent
from laneway.broker import EventBroker
from laneway.lanes import Lane, LaneFull
from laneway.models import (
    ConversationRecord,
    ConversationUpdate,
    Event,
    EventFilter,
    NewEvent,
    Status,
)
from laneway.store.base import EventStore, NotFound, StoreUnavailable

Outcome = Literal["finished", "paused", "error", "stuck"]
# How a run asks to end: "done" (the agent finished; it goes on if messages are
# unread), "stop" (max_steps, error, stuck: unread messages start a new run in
# the same token), "pause" (unread messages wait for the next run; refused if a
# message has withdrawn the pause) or "give_up" (no agent to run: unread
# messages wait, since a new run would fail the same way).
EndRequest = Literal["done", "stop", "pause", "give_up"]
MESSAGES_PER_STEP = 500


def status_event(status: Status, reason: str | None = None) -> NewEvent:
    data: dict[str, Any] = {"status": status}
    if reason is not None:
        data["reason"] = reason
    return NewEvent("status", "system", data)


def error_event(exc: BaseException) -> NewEvent:
    return NewEvent("error", "system", {"type": type(exc).__name__, "message": str(exc)})


class StuckStep:
    """A step the watchdog found running past ``step_timeout_s``.

    Its status is written once, by whichever side gets there first: the
    watchdog's io call, or the run thread once the step has returned. The run
    thread must never wait for the watchdog's write to get an io token, since
    it holds a run token meanwhile and in shared mode both come from one pool;
    a write already claimed is under way in its io thread and needs no more.
    """

    def __init__(self, number: int, timeout_s: float) -> None:
        self.reason = f"step {number} has run longer than step_timeout_s ({timeout_s:g} s)"
        self.written = threading.Event()
        self._lock = threading.Lock()
        self._claimed = False

    def write(
        self, append: Callable[[Sequence[NewEvent], ConversationUpdate], list[Event]]
    ) -> list[Event] | None:
        """Write the stuck status with ``append`` (a blocking store write) and
        set ``written``, unless another caller has claimed the write: then
        None, and that caller's write is under way."""
        with self._lock:
            if self._claimed:
                return None
            self._claimed = True
        try:
            return append([status_event("stuck", self.reason)], ConversationUpdate(status="stuck"))
        finally:
            self.written.set()


class RunHandle:
    """The live state of one run, shared by the service (on the loop) and the run
    thread. Fields the thread reads are plain values; the step clock is guarded by
    a lock because the stuck watchdog reads it from the loop."""

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        # In the run lane's queue (or past it), so admission can no longer fail.
        self.enqueued = False
        self.admitted = False
        self.pause_requested = False
        self.deleted = False
        self.abandoned = False
        # Taken out of the run queue at shutdown; its pause is written in one
        # batch with the others rather than by its own task.
        self.paused_at_shutdown = False
        # The seq of the newest message sent with run=true for this run. A seq, not
        # a count: a message the run already read from the store is not unread,
        # whenever the service got round to telling the handle about it.
        self.newest_message_seq = 0
        # False once the run has agreed to end; later messages start a new run.
        self.accepting = True
        # The run has stopped with messages unread: a new run follows at once, in
        # the same run-lane token, so that no full queue can refuse it.
        self.rerun = False
        self.stuck: StuckStep | None = None
        # How the run ended, for the log line the service writes.
        self.ending = ""
        self.error: str | None = None
        # Cancels the wait for a run token (pause or delete while queued).
        self.scope = anyio.CancelScope()
        # Shields the run's thread; cancelled only to leave it behind at shutdown.
        self.thread_scope: anyio.CancelScope | None = None
        # Set once the run is in the run queue (or past it), or gone without
        # getting there: until then a message handed to it may find no run.
        self.settled = anyio.Event()
        self.done = anyio.Event()
        self._clock = threading.Lock()
        self._step_started: float | None = None
        self._step_number = 0

    def begin_step(self, number: int) -> None:
        with self._clock:
            self._step_started = time.monotonic()
            self._step_number = number

    def end_step(self) -> StuckStep | None:
        """Stop the step clock; the step, if the watchdog declared it stuck."""
        with self._clock:
            self._step_started = None
            return self.stuck

    def check_stuck(self, timeout_s: float) -> StuckStep | None:
        """Mark the run stuck if its step has outlived ``timeout_s``; return the
        stuck step the first time only."""
        with self._clock:
            started = self._step_started
            if self.stuck or started is None or time.monotonic() - started <= timeout_s:
                return None
            self.stuck = StuckStep(self._step_number, timeout_s)
            return self.stuck

    def message_sent(self, seq: int) -> None:
        """Note a message stored for this run; call on the loop."""
        self.newest_message_seq = max(self.newest_message_seq, seq)

    def claim_end(self, read_seq: int, request: EndRequest) -> bool:
        """Called on the loop, where messages are noted, so that deciding to end
        and noting a message cannot interleave. Returns False when the run must
        go on to read messages stored after ``read_seq``, the last it has read."""
        if request == "pause" and not self.pause_requested:
            return False  # withdrawn by a message since the run thread saw it
        unread = self.newest_message_seq > read_seq
        if unread and request == "done":
            return False
        if unread and request == "stop":
            # Still accepting: the run that follows reads what comes meanwhile too.
            self.rerun = True
        else:
            self.accepting = False
        return True

    def start_again(self) -> None:
        """Ready the handle for the run that follows a "stop" with messages unread;
        call on the loop. A pause requested meanwhile still holds."""
        with self._clock:
            self.stuck = None
        self.rerun = False
        self.ending = ""
        self.error = None


@dataclass
class AgentState:
    """What a conversation keeps between its runs: the agent, and the results of
    the tool calls its last step asked for, which no step has been given yet (a
    run may end, by pause or max_steps, between a step and the next)."""

    agent: Agent
    tool_results: list[ToolResult] = field(default_factory=list)


class Runner:
    """Executes one run in the calling (run-lane) thread; see :meth:`execute`."""

    def __init__(
        self,
        *,
        handle: RunHandle,
        record: ConversationRecord,
        state: AgentState | None,
        store: EventStore,
        tool_lane: Lane,
        io_lane: Lane,
        broker: EventBroker,
    ) -> None:
        self.handle = handle
        self.record = record
        self.state = state
        self.store = store
        self.tool_lane = tool_lane
        self.io_lane = io_lane
        self.broker = broker
        self.cid = record.id
        # The seq of the last user message a step has been given.
        self.read_seq = record.read_seq

    def execute(self) -> AgentState | None:
        """Run the loop to its end and write the final status. Returns the agent's
        state, which the service keeps for the conversation's next run."""
        try:
            self._append([status_event("running")], ConversationUpdate(status="running"))
            if self.state is None:
                try:
                    self.state = AgentState(make_agent(self.record.agent))
                except Exception as exc:
                    self._fail(exc, "give_up")
                    return None
            outcome, reason = self._loop(self.state)
            self.handle.ending = f"{outcome} ({reason})" if reason else outcome
            # A stuck run's status is already written; it just ends.
            if outcome != "stuck":
                self._append([status_event(outcome, reason)], ConversationUpdate(status=outcome))
        except _Gone:
            pass
        except Exception as exc:
            self._fail(exc, "stop")
        return self.state

    def execute_again(self) -> AgentState | None:
        """Run once more, from the record the last run left, for the messages it
        stopped with unread (see :meth:`RunHandle.start_again`)."""
        record = self.store.get_conversation(self.cid)
        if record is None:
            return self.state  # deleted meanwhile
        self.record = record
        return self.execute()

    def _fail(self, exc: Exception, request: EndRequest) -> None:
        message = f"{type(exc).__name__}: {exc}"
        self.handle.error = message
        self._claim(request)
        with contextlib.suppress(_Gone):
            self._append(
                [error_event(exc), status_event("error", message)],
                ConversationUpdate(status="error", last_error=message),
            )

    def _loop(self, state: AgentState) -> tuple[Outcome, str]:
        handle = self.handle
        steps_done = self.record.steps_done
        steps_this_run = 0
        while True:
            if handle.pause_requested and self._claim("pause"):
                return "paused", "pause requested"
            if steps_this_run >= self.record.max_steps and self._claim("stop"):
                return "finished", f"max_steps ({self.record.max_steps}) reached"
            new_messages = self._unread_messages()
            if new_messages:
                self.read_seq = new_messages[-1].seq
            turn = Turn(
                step=steps_done + 1,
                new_messages=[str(e.data.get("text", "")) for e in new_messages],
                tool_results=state.tool_results,
            )
            state.tool_results = []
            handle.begin_step(turn.step)
            try:
                result = state.agent.step(turn)
            finally:
                stuck = handle.end_step()
                if stuck is not None:
                    # Before anything the step leads to, its error included.
                    self._write_stuck(stuck)
            _check_call_ids(result.tool_calls)
            steps_done += 1
            steps_this_run += 1
            self._append(
                _step_events(result),
                ConversationUpdate(steps_done=steps_done, read_seq=self.read_seq),
            )
            if stuck is not None and self._claim("stop"):
                # The step's tool calls are not run; the next step hears so.
                state.tool_results = self._not_run(result.tool_calls, "its step was stuck")
                return "stuck", ""
            if result.tool_calls:
                state.tool_results = self._run_tools(state.agent, result.tool_calls)
            if result.done and self._claim("done"):
                return "finished", "agent finished"

    def _write_stuck(self, stuck: StuckStep) -> None:
        """Write the stuck status unless the watchdog's write has claimed it, and
        then only wait for that write, which is already under way."""
        if stuck.write(self._append) is None:
            stuck.written.wait()

    def _not_run(self, calls: list[ToolCall], why: str) -> list[ToolResult]:
        return self._record_tool_results(
            [ToolResult(c.id, c.name, error=f"not run: {why}") for c in calls]
        )

    def _unread_messages(self) -> list[Event]:
        flt = EventFilter(kind="message", source="user", after_seq=self.read_seq)
        page, _ = self.store.search_events(
            self.cid, flt, order="asc", limit=MESSAGES_PER_STEP, cursor=None
        )
        return page

    def _claim(self, request: EndRequest) -> bool:
        claimed: bool = anyio.from_thread.run_sync(self.handle.claim_end, self.read_seq, request)
        return claimed

    def _run_tools(self, agent: Agent, calls: list[ToolCall]) -> list[ToolResult]:
        results: list[ToolResult] = anyio.from_thread.run(self._fan_out, agent, calls)
        return self._record_tool_results(results)

    def _record_tool_results(self, results: list[ToolResult]) -> list[ToolResult]:
        """Store each result as a tool_result event; returns them for the next step."""
        if results:
            self._append([NewEvent("tool_result", "tool", _tool_result_data(r)) for r in results])
        return results

    async def _fan_out(self, agent: Agent, calls: list[ToolCall]) -> list[ToolResult]:
        """On the loop: every call in parallel on the tool lane, results in call order."""
        results: list[ToolResult | None] = [None] * len(calls)

        async def one(index: int, call: ToolCall) -> None:
            try:
                noted = await self._note_if_waiting(call)
                output = await self.tool_lane.run_sync(self._call_tool, agent, call, noted)
            except LaneFull as exc:
                results[index] = ToolResult(call.id, call.name, error=str(exc))
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                results[index] = ToolResult(call.id, call.name, error=error)
            else:
                results[index] = ToolResult(call.id, call.name, output=_jsonable(output))

        async with anyio.create_task_group() as tg:
            for index, call in enumerate(calls):
                tg.start_soon(one, index, call)
        return [r for r in results if r is not None]

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

    def _call_tool(self, agent: Agent, call: ToolCall, noted: bool) -> Any:
        """On the tool lane: a call noted as waiting is noted as begun, then made."""
        if noted:
            self.store.note_tool_begun(self.cid, call.id)
        return agent.call_tool(call)

    def _append(
        self, events: Sequence[NewEvent], update: ConversationUpdate | None = None
    ) -> list[Event]:
        if self.handle.abandoned:
            raise _Gone
        try:
            stored = self.store.append(self.cid, events, update)
        except NotFound:
            raise _Gone from None
        # Safe to skip with no subscriber: one that subscribes after this check
        # replays from the store, which already holds these events.
        if self.broker.has_subscribers(self.cid):
            self.broker.publish_from_thread(self.cid, stored)
        return stored


class _Gone(Exception):
    """The conversation was deleted, or the server left this run behind at shutdown."""


def _check_call_ids(calls: list[ToolCall]) -> None:
    """A result is paired with its call by id, in the log and in the history an
    LLM is given, so the ids of one step's calls must differ."""
    ids = [call.id for call in calls]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the step asked for tool calls with the same id: {ids}")


def _step_events(result: StepResult) -> list[NewEvent]:
    events = [NewEvent("message", "agent", {"text": text}) for text in result.messages]
    events += [
        NewEvent(
            "tool_call",
            "agent",
            {"call_id": call.id, "name": call.name, "arguments": call.arguments},
        )
        for call in result.tool_calls
    ]
    return events


def _tool_result_data(result: ToolResult) -> dict[str, Any]:
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
