"""``openai``: an agent that talks to any OpenAI-compatible chat-completions server.

One step is one streamed chat-completions call, made with the official ``openai``
SDK, which already does streaming, tool-call deltas, timeouts, and retries that
honour ``Retry-After``. The text streams to live subscribers as it comes; the
step ends with the full text, the tool calls the model asked for (run in
parallel on the tool lane by the runner), and the tokens it used.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, cast

import msgspec

from laneway.agents.base import AgentConfigError, StepResult, ToolCall, Turn, Usage
from laneway.agents.llm_context import History
from laneway.agents.llm_provider import ProviderClient
from laneway.agents.llm_stats import LLMStats
from laneway.models import Event
from laneway.tools import ToolRegistry

if TYPE_CHECKING:
    from openai import Stream
    from openai.types.chat import (
        ChatCompletionChunk,
        ChatCompletionFunctionToolParam,
        ChatCompletionMessageParam,
    )
    from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall


class OpenAIConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str | None = None
    system_prompt: str | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    tools: list[str] = msgspec.field(default_factory=list)
    parallel_tool_calls: bool = True
    # Chat messages sent besides the system prompt; the oldest turns are cut.
    max_context_messages: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 200


class ProviderError(RuntimeError):
    """The provider refused or failed a step after the SDK's retries."""


class _Reply:
    """A streamed reply put back together from its chunks."""

    def __init__(self) -> None:
        self.text: list[str] = []
        # In the order they began; the call a part continues is found by index.
        self.calls: list[dict[str, Any]] = []
        self._by_index: dict[int | None, dict[str, Any]] = {}
        self.usage: Usage | None = None
        self.first_token_at: float | None = None

    def add(self, chunk: ChatCompletionChunk, emit: Callable[[str], None] | None) -> None:
        if chunk.usage is not None:
            self.usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content:
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                self.text.append(delta.content)
                if emit is not None:
                    emit(delta.content)
            for part in delta.tool_calls or ():
                self._add_call_part(part)

    def _add_call_part(self, part: ChoiceDeltaToolCall) -> None:
        """Parts of one call share its index, and only its first has an id. A
        part with a new id begins a new call even at an index already seen:
        some servers send every call at index 0, or none."""
        call = self._by_index.get(part.index)
        if call is None or (part.id and call["id"] and part.id != call["id"]):
            call = {"id": "", "name": "", "args": []}
            self.calls.append(call)
            self._by_index[part.index] = call
        call["id"] = part.id or call["id"]
        if part.function is not None:
            call["name"] += part.function.name or ""
            call["args"].append(part.function.arguments or "")


class OpenAIAgent:
    def __init__(
        self,
        config: OpenAIConfig,
        *,
        model: str,
        client: ProviderClient,
        tools: ToolRegistry,
        stats: LLMStats,
    ) -> None:
        self.config = config
        self.model = model
        self._client = client
        self._tools = tools
        self._tool_specs = tools.openai_tools(config.tools)
        self._stats = stats
        self._history = History()
        # The raw argument text of each call, which the tool parses and checks.
        self._arguments: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stream: Stream[ChatCompletionChunk] | None = None
        # A cancel counts only while a step is in flight here: one that comes
        # as a step is ending must not stop the next one, perhaps runs later.
        self._in_step = False
        self._cancelled = False

    def resume(self, events: Sequence[Event]) -> None:
        """Take the conversation's stored history, so that it goes on where it was."""
        self._history.add_events(events)

    def cancel(self) -> None:
        """Close the step's stream now: the provider stops generating at once."""
        with self._lock:
            if not self._in_step:
                return
            self._cancelled = True
            stream = self._stream
        if stream is not None:
            _hang_up(stream)

    def step(self, turn: Turn) -> StepResult:
        self._history.add_results(turn.tool_results)
        for text in turn.new_messages:
            self._history.add_user(text)
        started = time.perf_counter()
        reply = _Reply()
        with self._lock:
            self._in_step = True
        try:
            interrupted = self._stream_reply(reply, turn)
            text = "".join(reply.text)
            calls = [] if interrupted else self._tool_calls(turn.step, reply)
        except BaseException:
            # The messages stay unread in the log, and the next run gives them
            # to a step again; the results were the log's last word on their calls.
            self._history.forget_last(len(turn.new_messages))
            raise
        finally:
            with self._lock:
                self._in_step = self._cancelled = False
                self._stream = None
        if text or calls or not interrupted:
            # As stored: an interrupted step that said nothing leaves no message.
            self._history.add_assistant(text, calls)
        self._stats.observe_step(self.model, started, reply.first_token_at, reply.usage)
        # An empty answer is still stored, as the message that carries its usage.
        empty_answer = not text and not calls and not interrupted
        return StepResult(
            messages=[text] if text or empty_answer else [],
            tool_calls=calls,
            done=not calls and not interrupted,
            usage=reply.usage,
        )

    def _stream_reply(self, reply: _Reply, turn: Turn) -> bool:
        """Read the reply into ``reply``; True if a cancel cut it short."""
        import openai

        c = self.config
        # Left out of the request, rather than sent as null, when not set.
        omit = openai.omit
        messages = self._history.messages(c.system_prompt, c.max_context_messages)
        try:
            stream = self._client.get().chat.completions.create(
                model=self.model,
                messages=cast("list[ChatCompletionMessageParam]", messages),
                stream=True,
                stream_options={"include_usage": True},
                tools=cast("list[ChatCompletionFunctionToolParam]", self._tool_specs) or omit,
                parallel_tool_calls=c.parallel_tool_calls if self._tool_specs else omit,
                temperature=c.temperature if c.temperature is not None else omit,
                max_tokens=c.max_tokens if c.max_tokens is not None else omit,
            )
            with self._lock:
                self._stream = stream
                cancelled = self._cancelled
            if cancelled:
                _hang_up(stream)
                return True
            for chunk in stream:
                reply.add(chunk, turn.emit_delta)
        except openai.APIError as exc:
            with self._lock:
                if self._cancelled:
                    return True
            raise ProviderError(_describe(exc, self._client.provider.timeout_s)) from None
        return False

    def _tool_calls(self, step: int, reply: _Reply) -> list[ToolCall]:
        calls = []
        for index, part in enumerate(reply.calls):
            # Some servers send no id; one is needed to pair the call with its result.
            call_id = part["id"] or f"call_{step}_{index}"
            raw = "".join(part["args"])
            self._arguments[call_id] = raw
            calls.append(ToolCall(call_id, part["name"], _as_object(raw)))
        return calls

    def call_tool(self, call: ToolCall) -> Any:
        if call.name not in self.config.tools:
            raise LookupError(
                f"no tool {call.name!r} here; the tools are {sorted(self.config.tools)}"
            )
        tool = self._tools.get(call.name)
        assert tool is not None, "checked when the agent was made"
        raw = self._arguments.pop(call.id, None)
        return tool.call(raw if raw is not None else call.arguments)


def _hang_up(stream: Stream[ChatCompletionChunk]) -> None:
    """End a stream from another thread. Closing alone does not wake a thread
    blocked reading a stalled stream (on Linux, a close leaves a read under way
    alone); shutting the socket down does, and tells the provider at once."""
    network = stream.response.extensions.get("network_stream")
    sock = network.get_extra_info("socket") if network is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)
    stream.close()


def _as_object(raw: str) -> dict[str, Any]:
    """The arguments as stored in the log; a call whose arguments are not a JSON
    object is stored with none, and its tool tells the model what was wrong."""
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _describe(exc: Exception, timeout_s: float) -> str:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return f"the provider did not answer within {timeout_s:g} s"
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        detail = body.get("message") if isinstance(body, dict) else None
        return f"the provider answered {exc.status_code}: {detail or exc.message}"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        detail = f"{type(cause).__name__}: {cause}" if cause else str(exc)
        return f"the connection to the provider failed: {detail}"
    return f"the provider failed: {exc}"


def make_openai(
    config: dict[str, Any],
    *,
    client: ProviderClient | None,
    tools: ToolRegistry,
    stats: LLMStats,
) -> OpenAIAgent:
    if client is None:
        raise AgentConfigError(
            "the openai agent needs a provider: start laneway with --llm-base-url "
            "(for example http://127.0.0.1:8080/v1)"
        )
    try:
        parsed = msgspec.convert(config, OpenAIConfig)
    except msgspec.ValidationError as exc:
        raise AgentConfigError(f"openai config: {exc}") from exc
    models = client.provider.models
    model = parsed.model or client.provider.default_model()
    if model is None:
        raise AgentConfigError("openai config: name a `model` (the server lists none)")
    if models and model not in models:
        raise AgentConfigError(f"openai config: model {model!r} is not one of {list(models)}")
    unknown = [name for name in parsed.tools if tools.get(name) is None]
    if unknown:
        raise AgentConfigError(
            f"openai config: no tool named {unknown}; this server has {tools.names()}"
        )
    return OpenAIAgent(parsed, model=model, client=client, tools=tools, stats=stats)
