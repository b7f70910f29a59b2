"""One conversation run: the blocking agent loop that lives in a run-lane thread.

The loop owns nothing on the event loop. It writes events straight to the store
(it is already off the loop), and crosses back into the loop only to publish
events and a step's deltas to live subscribers (without waiting, and deltas
only while someone asks for them), to fan tool calls out on the tool lane, and
to agree with the service on when it ends, so that no message sent during the
run is ever lost. Each crossing wakes the loop and takes the GIL
from whatever request it is serving, so none is made that is not needed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, Protocol

import anyio
import anyio.from_thread
import msgspec

from laneway.agents import Agent, StepResult, ToolCall, ToolResult, Turn
from laneway.broker import EventBroker
from laneway.lanes import Lanes
from laneway.lifecycle import Claimed, EndAsked, EndRequest, owed
from laneway.models import (
    AgentSpec,
    ConversationRecord,
    ConversationUpdate,
    Event,
    EventFilter,
    NewEvent,
    Usage,
    status_event,
)
from laneway.runhandle import RunHandle, StuckStep
from laneway.store.base import EventStore, LeaseLost, NotFound, StoreUnavailable
from laneway.toolcalls import Spawn, ToolCalls, tool_result_data

log = logging.getLogger("laneway.runs")

Outcome = Literal["finished", "paused", "error", "stuck"]
MakeAgent = Callable[[AgentSpec], Agent]
MESSAGES_PER_STEP = 500
# What an agent made for a conversation with a history is given of it.
HISTORY_KINDS = ("message", "tool_call", "tool_result")


def error_event(exc: BaseException) -> NewEvent:
    return NewEvent("error", "system", {"type": type(exc).__name__, "message": str(exc)})


def thread_failure(
    conversation_id: str, exc: Exception
) -> tuple[list[NewEvent], ConversationUpdate]:
    """What to store for a run whose thread raised. The agent's own errors end
    in an "error" status inside the thread; this is the store failing under
    the run (or a bug). The run ends in error all the same, its status owed
    if the store still refuses it."""
    reason = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, StoreUnavailable):
        log.error("run %s ended: its writes failed: %s", conversation_id, exc)
    else:
        log.exception("run %s ended: %s", conversation_id, reason)
    update = ConversationUpdate(status="error", last_error=reason)
    return [error_event(exc), status_event("error", reason)], update


# How a run stores its events: the store's append, or, for a run held under a
# lease, one that carries it (see laneway.cluster).
RunWrite = Callable[[str, Sequence[NewEvent], ConversationUpdate | None], list[Event]]


class RunLeases(Protocol):
    """Leases on runs, when several instances share the store (see laneway.cluster)."""

    def write_for(self, conversation_id: str) -> RunWrite | None:
        """How the run writes: carrying its lease, if it has one."""
        ...

    def ended(self, conversation_id: str) -> None:
        """The run is gone: give its lease up."""
        ...

    def emit_delta(self, conversation_id: str, step: int, text: str) -> None:
        """Hand a delta to followers on other instances; from the run thread."""
        ...


class AgentState:
    """What a conversation keeps between its runs: the agent, and the results of
    tool calls that no step has been given yet (a run may end, by pause,
    interrupt or max_steps, between a step and the next; and a call under way
    when its run was interrupted answers later, from the loop)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._results: list[ToolResult] = []
        self._lock = threading.Lock()

    def add_results(self, results: Sequence[ToolResult]) -> None:
        with self._lock:
            self._results += results

    def take_results(self) -> list[ToolResult]:
        with self._lock:
            taken, self._results = self._results, []
        return taken


class Runner:
    """Executes one run in the calling (run-lane) thread; see :meth:`execute`."""

    def __init__(
        self,
        *,
        handle: RunHandle,
        record: ConversationRecord,
        state: AgentState | None,
        make_agent: MakeAgent,
        store: EventStore,
        lanes: Lanes,
        broker: EventBroker,
        spawn: Spawn,
        late: Callable[[AgentState, ToolResult], Awaitable[None]],
        write: RunWrite | None = None,
        leases: RunLeases | None = None,
    ) -> None:
        self.handle = handle
        self.record = record
        self.state = state
        self.make_agent = make_agent
        self.store = store
        self.lanes = lanes
        self.broker = broker
        self.spawn = spawn
        self.late = late
        self._write = write
        self._leases = leases
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
                    self.state = AgentState(self._resumed(self.make_agent(self.record.agent)))
                except Exception as exc:
                    self._fail(exc, "give_up")
                    return None
            self.handle.agent = self.state.agent
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
        stopped with unread."""
        record = self.store.get_conversation(self.cid)
        if record is None:
            return self.state  # deleted meanwhile
        self.record = record
        return self.execute()

    def _resumed(self, agent: Agent) -> Agent:
        """Give an agent that can take it the conversation's history (see Agent)."""
        resume = getattr(agent, "resume", None)
        if resume is not None:
            resume(self._history())
        return agent

    def _history(self) -> list[Event]:
        """Every stored message, tool call and tool result, but for the user
        messages the first step is given as new."""
        events: list[Event] = []
        cursor: str | None = None
        while True:
            page, cursor = self.store.search_events(
                self.cid, EventFilter(), order="asc", limit=MESSAGES_PER_STEP, cursor=cursor
            )
            events += page
            if cursor is None:
                break
        return [
            e
            for e in events
            if e.kind in HISTORY_KINDS
            and not (e.kind == "message" and e.source == "user" and e.seq > self.read_seq)
        ]

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
        # This run is the one writer of the conversation's totals while it runs.
        tokens = Usage(self.record.prompt_tokens, self.record.completion_tokens)
        while True:
            # Read before anything of this step: an interrupt from here on ends it.
            interrupts = handle.state.interrupts
            if handle.state.pause is not None and (claim := self._claim("pause")):
                return "paused", claim.reason
            if steps_this_run >= self.record.max_steps and self._claim("stop"):
                return "finished", f"max_steps ({self.record.max_steps}) reached"
            read_before = self.read_seq
            new_messages = self._unread_messages()
            if new_messages:
                self.read_seq = new_messages[-1].seq
            turn = Turn(
                step=steps_done + 1,
                new_messages=[str(e.data.get("text", "")) for e in new_messages],
                tool_results=state.take_results(),
                emit_delta=functools.partial(self._emit_delta, steps_done + 1),
            )
            if not handle.begin_step(turn.step, interrupts):
                # Interrupted before its step began, too soon for the step to
                # be cancelled: it does not begin, and what it was to be
                # given waits for the next.
                self.read_seq = read_before
                state.add_results(turn.tool_results)
                continue
            try:
                result: StepResult | None = state.agent.step(turn)
            except Exception:
                if handle.state.interrupts == interrupts:
                    raise
                result = None  # ended by the interrupt: nothing to store
            finally:
                stuck = handle.end_step()
                if stuck is not None:
                    # Before anything the step leads to, its error included.
                    self._write_stuck(stuck)
            interrupted = handle.state.interrupts != interrupts
            if result is None:
                continue
            _check_call_ids(result.tool_calls)
            steps_done += 1
            steps_this_run += 1
            update = ConversationUpdate(steps_done=steps_done, read_seq=self.read_seq)
            if result.usage is not None:
                tokens = Usage(
                    tokens.prompt_tokens + result.usage.prompt_tokens,
                    tokens.completion_tokens + result.usage.completion_tokens,
                )
                update = msgspec.structs.replace(
                    update,
                    prompt_tokens=tokens.prompt_tokens,
                    completion_tokens=tokens.completion_tokens,
                )
            self._append(_step_events(result), update)
            if stuck is not None and self._claim("stop"):
                # The step's tool calls are not run; the next step hears so.
                state.add_results(self._not_run(result.tool_calls, "its step was stuck"))
                return "stuck", ""
            if interrupted:
                state.add_results(self._not_run(result.tool_calls, "interrupted"))
                continue  # a pause, or the new message, is taken at the top
            if result.tool_calls:
                state.add_results(self._run_tools(state, result.tool_calls))
            if result.done and self._claim("done"):
                return "finished", "agent finished"

    def _emit_delta(self, step: int, text: str) -> None:
        # A delta with nobody asking for it would only wake the loop for nothing.
        if self.broker.wants_deltas(self.cid):
            self.broker.publish_delta_from_thread(self.cid, step, text)
        if self._leases is not None:
            self._leases.emit_delta(self.cid, step, text)

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

    def _claim(self, request: EndRequest) -> Claimed | None:
        """Ask the loop whether the run may end; the claim, or None to go on."""
        effects = anyio.from_thread.run_sync(self.handle.fire, EndAsked(self.read_seq, request))
        return owed(effects, Claimed)

    def _run_tools(self, state: AgentState, calls: list[ToolCall]) -> list[ToolResult]:
        results: list[ToolResult] = anyio.from_thread.run(self._fan_out, state, calls)
        return self._record_tool_results(results)

    async def _fan_out(self, state: AgentState, calls: list[ToolCall]) -> list[ToolResult]:
        """On the loop: every call in parallel on the tool lane; see ToolCalls."""
        batch = ToolCalls(
            calls,
            state.agent,
            conversation_id=self.cid,
            store=self.store,
            tool_lane=self.lanes.tool,
            io_lane=self.lanes.io,
            spawn=self.spawn,
            late=functools.partial(self.late, state),
        )
        self.handle.tools = batch
        try:
            return await batch.run()
        finally:
            self.handle.tools = None

    def _record_tool_results(self, results: list[ToolResult]) -> list[ToolResult]:
        """Store each result as a tool_result event; returns them for the next step."""
        if results:
            self._append([NewEvent("tool_result", "tool", tool_result_data(r)) for r in results])
        return results

    def _append(
        self, events: Sequence[NewEvent], update: ConversationUpdate | None = None
    ) -> list[Event]:
        if self.handle.abandoned:
            raise _Gone
        try:
            write = self._write if self._write is not None else self.store.append
            stored = write(self.cid, events, update)
        except (NotFound, LeaseLost):
            # Deleted, or taken over by another instance: nothing more of this
            # run may be stored.
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
    if result.usage is not None and events:
        # On the step's message, or on its first call when it said nothing.
        events[0].data["usage"] = msgspec.to_builtins(result.usage)
    return events
