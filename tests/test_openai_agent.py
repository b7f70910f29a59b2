"""The openai agent against a scripted OpenAI-compatible server: the wire format
of a real one, and the failures a real model cannot be made to show on demand."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from laneway.agents import AgentCatalog, LLMProvider
from laneway.errors import InvalidRequest
from laneway.models import AgentSpec, Event
from laneway.service import ConversationService
from laneway.tools import ToolRegistry
from tests.scripted_llm import Reply, ScriptedLLM, scripted_llm
from tests.services import GUARD_S, all_events, open_service, wait_status

pytestmark = pytest.mark.anyio

MODEL = "scripted-1"


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLM]:
    with scripted_llm() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_script(llm: ScriptedLLM) -> None:
    llm.replies.clear()
    llm.requests.clear()
    llm.authorizations.clear()
    llm.disconnects.clear()
    llm.stream_started.clear()


@asynccontextmanager
async def llm_service(
    llm: ScriptedLLM, db: str = ":memory:", **provider: Any
) -> AsyncIterator[ConversationService]:
    settings: dict[str, Any] = {"timeout_s": 5.0, "max_retries": 0, "api_key": "sk-test-secret"}
    settings.update(provider)
    catalog = AgentCatalog(
        llm=LLMProvider(base_url=llm.base_url, models=(MODEL,), **settings),
        tools=ToolRegistry.with_builtins(["tests.sample_tools:meet"]),
    )
    try:
        async with open_service(db, agents=catalog) as service:
            yield service
    finally:
        catalog.close()


def spec(**config: Any) -> AgentSpec:
    return AgentSpec("openai", {"system_prompt": "be brief", **config})


async def finished(service: ConversationService, text: str, **config: Any) -> list[Event]:
    conv = await service.create(agent=spec(**config), initial_message=text)
    await wait_status(service, conv.id, "finished", "error", "paused")
    return await all_events(service, conv.id)


def kinds(events: list[Event], kind: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.kind == kind]


async def test_a_streamed_reply_is_stored_whole_with_its_usage(llm: ScriptedLLM) -> None:
    llm.script(Reply(text="Hello there, friend.", pieces=4, usage=(12, 7)))
    async with llm_service(llm) as service:
        events = await finished(service, "hi", temperature=0.5, max_tokens=40)
    [message] = [d for d in kinds(events, "message") if "usage" in d]
    assert message == {"text": "Hello there, friend.", "usage": {
        "prompt_tokens": 12, "completion_tokens": 7}}  # fmt: skip
    assert kinds(events, "status")[-1]["status"] == "finished"
    [request] = llm.requests
    assert request["model"] == MODEL
    assert request["stream"] is True
    assert request["temperature"] == 0.5
    assert request["max_tokens"] == 40
    assert request["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert "tools" not in request


async def test_tool_calls_run_and_their_results_reach_the_model(llm: ScriptedLLM) -> None:
    llm.script(
        Reply(tool_calls=[("calculator", '{"expression": "6*7"}'), ("current_time", "{}")]),
        Reply(text="It is 42."),
    )
    async with llm_service(llm) as service:
        events = await finished(service, "compute", tools=["calculator", "current_time"])
        conv = await service.get(events[0].conversation_id)
    # Each step's usage on its first event, and their sum on the conversation.
    assert [e.data["usage"] for e in events if "usage" in e.data] == [
        {"prompt_tokens": 10, "completion_tokens": 5}] * 2  # fmt: skip
    assert (conv.usage.prompt_tokens, conv.usage.completion_tokens) == (20, 10)
    calls = kinds(events, "tool_call")
    assert [c["name"] for c in calls] == ["calculator", "current_time"]
    assert calls[0]["arguments"] == {"expression": "6*7"}
    results = {r["name"]: r for r in kinds(events, "tool_result")}
    assert results["calculator"]["output"] == 42
    assert results["current_time"]["output"].endswith(("Z", "+00:00"))
    first, second = llm.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["calculator", "current_time"]
    assert first["parallel_tool_calls"] is True
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_0", "call_1"]
    assert tool_messages[0]["content"] == "42"
    assert kinds(events, "message")[-1]["text"] == "It is 42."


async def test_the_calls_of_one_reply_run_at_the_same_time(llm: ScriptedLLM) -> None:
    # Each `meet` returns only once the other is under way too.
    llm.script(
        Reply(tool_calls=[("meet", '{"name": "a"}'), ("meet", '{"name": "b"}')]),
        Reply(text="both met"),
    )
    async with llm_service(llm) as service:
        events = await finished(service, "meet", tools=["meet"])
    assert [r.get("output") for r in kinds(events, "tool_result")] == ["a met", "b met"]


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("calculator", '{"expression": "1+', "not valid JSON"),
        ("calculator", '{"expression": 5}', "Expected `str`"),
        ("calculator", '{"expr": "1"}', "unknown field `expr`"),
        ("nosuch", "{}", "no tool 'nosuch'"),
    ],
)
async def test_bad_tool_calls_tell_the_model_and_the_run_goes_on(
    llm: ScriptedLLM, name: str, arguments: str, expected: str
) -> None:
    llm.script(Reply(tool_calls=[(name, arguments)]), Reply(text="sorry"))
    async with llm_service(llm) as service:
        events = await finished(service, "go", tools=["calculator"])
    [result] = kinds(events, "tool_result")
    assert expected in result["error"]
    assert kinds(events, "status")[-1]["status"] == "finished"
    [tool_message] = [m for m in llm.requests[1]["messages"] if m["role"] == "tool"]
    assert expected in tool_message["content"]


@pytest.mark.parametrize("index", [0, None])
async def test_calls_sent_at_one_index_or_none_stay_apart(
    llm: ScriptedLLM, index: int | None
) -> None:
    llm.script(
        Reply(
            tool_calls=[("calculator", '{"expression": "1+1"}'), ("current_time", "{}")],
            call_index=index,
        ),
        Reply(text="done"),
    )
    async with llm_service(llm) as service:
        events = await finished(service, "go", tools=["calculator", "current_time"])
    assert [c["name"] for c in kinds(events, "tool_call")] == ["calculator", "current_time"]
    assert kinds(events, "tool_result")[0]["output"] == 2
    assert kinds(events, "status")[-1]["status"] == "finished"


async def test_a_429_is_retried_after_its_retry_after(llm: ScriptedLLM) -> None:
    llm.script(Reply(status=429, headers={"Retry-After": "0.2"}), Reply(text="ok"))
    async with llm_service(llm, max_retries=2) as service:
        started = time.monotonic()
        events = await finished(service, "hi")
        waited = time.monotonic() - started
    assert kinds(events, "status")[-1]["status"] == "finished"
    assert len(llm.requests) == 2
    assert waited >= 0.2  # the SDK waited as the provider asked


async def test_errors_past_the_retries_end_the_run_naming_the_provider_error(
    llm: ScriptedLLM,
) -> None:
    llm.script(
        Reply(status=500, error_message="model overloaded", headers={"Retry-After": "0"}),
        Reply(status=500, error_message="model overloaded", headers={"Retry-After": "0"}),
    )
    async with llm_service(llm, max_retries=1) as service:
        events = await finished(service, "hi")
    assert len(llm.requests) == 2
    [error] = kinds(events, "error")
    assert error["type"] == "ProviderError"
    assert error["message"] == "the provider answered 500: model overloaded"
    assert kinds(events, "status")[-1]["status"] == "error"


async def test_messages_of_a_failed_step_are_sent_once_when_the_next_run_reads_them(
    llm: ScriptedLLM,
) -> None:
    llm.script(Reply(status=500), Reply(text="better now"))
    async with llm_service(llm) as service:
        events = await finished(service, "first")
        cid = events[0].conversation_id
        await service.send_message(cid, "second")
        await wait_status(service, cid, "finished")
    users = [m["content"] for m in llm.requests[-1]["messages"] if m["role"] == "user"]
    assert users == ["first", "second"]


async def test_a_stream_that_stalls_times_out_as_an_error(llm: ScriptedLLM) -> None:
    llm.script(Reply(text="never finished", stall_after=2))
    async with llm_service(llm, timeout_s=0.5) as service:
        events = await finished(service, "hi")
    [error] = kinds(events, "error")
    assert "did not answer within 0.5 s" in error["message"]
    assert kinds(events, "status")[-1]["status"] == "error"


async def test_a_stream_cut_in_the_middle_is_an_error(llm: ScriptedLLM) -> None:
    llm.script(Reply(text="cut short here", cut_after=2))
    async with llm_service(llm) as service:
        events = await finished(service, "hi")
    [error] = kinds(events, "error")
    assert "connection to the provider failed" in error["message"]
    assert kinds(events, "status")[-1]["status"] == "error"


async def test_interrupt_closes_the_stream_at_once(llm: ScriptedLLM) -> None:
    # The role chunk and the first two pieces, "ab " and "cd ", then nothing.
    llm.script(Reply(text="ab cd ef gh", pieces=4, stall_after=3))
    async with llm_service(llm, timeout_s=60) as service:
        conv = await service.create(agent=spec(), initial_message="talk")
        with anyio.fail_after(GUARD_S):
            await anyio.to_thread.run_sync(llm.stream_started.wait)
            while len(await all_events(service, conv.id)) < 3:  # running
                await anyio.sleep(0.01)
        await anyio.sleep(0.05)  # the stream's first pieces are read
        asked = time.monotonic()
        await service.interrupt(conv.id)
        await wait_status(service, conv.id, "paused")
        with anyio.fail_after(GUARD_S):
            while not llm.disconnects:
                await anyio.sleep(0.005)
        events = await all_events(service, conv.id)
    assert llm.disconnects[0] >= asked
    assert kinds(events, "status")[-1] == {"status": "paused", "reason": "interrupted"}
    # What had streamed is kept.
    assert kinds(events, "message")[-1]["text"] == "ab cd "


async def test_a_conversation_goes_on_with_its_history_after_a_restart(
    llm: ScriptedLLM, tmp_path: Any
) -> None:
    db = str(tmp_path / "llm.db")
    llm.script(Reply(tool_calls=[("calculator", '{"expression": "2+2"}')]), Reply(text="four"))
    async with llm_service(llm, db) as service:
        conv = await service.create(agent=spec(tools=["calculator"]), initial_message="2+2?")
        await wait_status(service, conv.id, "finished")
    llm.script(Reply(text="you asked 2+2"))
    async with llm_service(llm, db) as service:
        await service.send_message(conv.id, "what did I ask?")
        await wait_status(service, conv.id, "finished")
    messages = llm.requests[-1]["messages"]
    assert [m["role"] for m in messages] == [
        "system", "user", "assistant", "tool", "assistant", "user"]  # fmt: skip
    assert messages[1]["content"] == "2+2?"
    assert messages[2]["tool_calls"][0]["function"]["arguments"] == '{"expression": "2+2"}'
    assert messages[3] == {"role": "tool", "tool_call_id": "call_0", "content": "4"}
    assert messages[4]["content"] == "four"
    assert messages[5]["content"] == "what did I ask?"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"model": "gpt-9"}, "model 'gpt-9' is not one of ['scripted-1']"),
        ({"tools": ["nosuch"]}, "no tool named ['nosuch']"),
        ({"temperature": 3}, "temperature"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_config_is_refused_at_creation(
    llm: ScriptedLLM, config: dict[str, Any], expected: str
) -> None:
    async with llm_service(llm) as service:
        with pytest.raises(InvalidRequest, match="openai config") as caught:
            await service.create(agent=AgentSpec("openai", config))
    assert expected in str(caught.value)


async def test_without_a_provider_the_agent_says_which_flag_to_set() -> None:
    async with open_service() as service:
        with pytest.raises(InvalidRequest, match="--llm-base-url"):
            await service.create(agent=AgentSpec("openai", {}))


async def test_the_api_key_goes_to_the_provider_and_nowhere_else(llm: ScriptedLLM) -> None:
    llm.script(Reply(text="fine"))
    async with llm_service(llm) as service:
        events = await finished(service, "hi")
        conversations, _ = await service.list_conversations()
    assert llm.authorizations[-1] == "Bearer sk-test-secret"
    assert "sk-test-secret" not in json.dumps([e.data for e in events])
    assert "sk-test-secret" not in repr(conversations)
    assert "sk-test-secret" not in repr(service.agents.llm_client.provider)  # type: ignore[union-attr]
