"""The chat history of the openai agent, built from its steps or from the log."""

from __future__ import annotations

from typing import Any

from laneway.agents import ToolCall, ToolResult
from laneway.agents.llm_context import NO_RESULT, History
from laneway.models import Event


def _event(seq: int, kind: str, source: str, data: dict[str, Any]) -> Event:
    stamp = "2026-12-06T00:00:00.000000Z"
    return Event(seq, f"e{seq}", "c", stamp, kind, source, data)  # type: ignore[arg-type]


def _roles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["role"] for m in messages]


def test_each_result_follows_its_call_wherever_the_log_has_it() -> None:
    history = History()
    history.add_events(
        [
            _event(1, "message", "user", {"text": "add"}),
            _event(2, "message", "agent", {"text": "on it"}),
            _event(
                3, "tool_call", "agent", {"call_id": "a", "name": "calc", "arguments": {"x": 1}}
            ),
            _event(4, "tool_call", "agent", {"call_id": "b", "name": "calc", "arguments": {}}),
            _event(5, "tool_result", "tool", {"call_id": "a", "name": "calc", "output": 2}),
            _event(6, "message", "user", {"text": "and?"}),
            # b answered late, after a new user message
            _event(7, "tool_result", "tool", {"call_id": "b", "name": "calc", "error": "boom"}),
            _event(8, "status", "system", {"status": "running"}),
        ]
    )
    messages = history.messages("be brief", limit=100)
    assert _roles(messages) == ["system", "user", "assistant", "tool", "tool", "user"]
    assistant = messages[2]
    assert assistant["content"] == "on it"
    assert [c["id"] for c in assistant["tool_calls"]] == ["a", "b"]
    assert assistant["tool_calls"][0]["function"] == {"name": "calc", "arguments": '{"x": 1}'}
    assert messages[3] == {"role": "tool", "tool_call_id": "a", "content": "2"}
    assert messages[4] == {"role": "tool", "tool_call_id": "b", "content": "error: boom"}


def test_a_call_without_a_result_is_answered_for_the_model() -> None:
    history = History()
    history.add_user("go")
    history.add_assistant("", [ToolCall("a", "slow")])
    messages = history.messages(None, limit=10)
    assert messages[1]["content"] is None
    assert messages[2] == {"role": "tool", "tool_call_id": "a", "content": NO_RESULT}


def test_reused_call_ids_pair_with_the_latest_open_call() -> None:
    history = History()
    for step in (1, 2):
        history.add_assistant(f"step {step}", [ToolCall("call_0", "t")])
        history.add_results([ToolResult("call_0", "t", output=f"r{step}")])
    contents = [m["content"] for m in history.messages(None, limit=10) if m["role"] == "tool"]
    assert contents == ["r1", "r2"]


def test_the_oldest_turns_are_cut_and_a_call_keeps_its_results() -> None:
    history = History()
    history.add_user("one")
    history.add_assistant("reply one", [])
    history.add_user("two")
    history.add_assistant("", [ToolCall("a", "t"), ToolCall("b", "t")])
    history.add_results([ToolResult("a", "t", output=1), ToolResult("b", "t", output=2)])
    # The call and its two results are one turn of three messages: with room
    # for four, the turn before them fits and the two before that do not.
    messages = history.messages("sys", limit=4)
    assert _roles(messages) == ["system", "user", "assistant", "tool", "tool"]
    assert messages[1]["content"] == "two"
    # Too small for the last turn: it is sent whole all the same.
    assert _roles(history.messages(None, limit=1)) == ["assistant", "tool", "tool"]


def test_text_results_go_as_they_are_and_others_as_json() -> None:
    history = History()
    history.add_assistant("", [ToolCall("a", "t"), ToolCall("b", "t")])
    history.add_results([ToolResult("a", "t", output="plain"), ToolResult("b", "t", output=[1])])
    tools = [m["content"] for m in history.messages(None, limit=10) if m["role"] == "tool"]
    assert tools == ["plain", "[1]"]


def test_a_cut_never_leaves_the_models_answer_first() -> None:
    history = History()
    history.add_user("one")
    history.add_assistant("reply one", [])
    history.add_assistant("more", [])
    history.add_user("two")
    # Room for three: "reply one" would lead; it goes, and so does "more".
    assert _roles(history.messages("sys", limit=3)) == ["system", "user"]
    assert _roles(history.messages(None, limit=4)) == ["user", "assistant", "assistant", "user"]
