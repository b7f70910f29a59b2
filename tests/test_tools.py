from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest

from laneway.tools import (
    Tool,
    ToolArgumentsError,
    ToolLoadError,
    ToolRegistry,
    UnknownToolError,
    load_tool,
    tool_from_function,
)
from tests import sample_tools


def test_schema_of_a_simple_function_exactly() -> None:
    tool = tool_from_function(sample_tools.search)
    assert tool.name == "search"
    assert tool.description == "Search the catalogue for items matching a query."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "The text to look for."},
            "limit": {
                "type": "integer",
                "description": "The most results to return; fewer when fewer match.",
                "default": 10,
            },
        },
        "required": ["query"],
        "additionalProperties": False,
    }


def test_schema_of_many_kinds_of_parameter() -> None:
    schema = tool_from_function(sample_tools.everything).parameters
    props = schema["properties"]
    assert props["text"] == {"type": "string"}
    assert props["count"] == {"type": "integer"}
    assert props["ratio"] == {"type": "number"}
    assert props["flag"] == {"type": "boolean"}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["mode"] == {"enum": ["fast", "slow"], "default": "fast"}
    assert props["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert props["size"] == {
        "type": "integer",
        "minimum": 1,
        "description": "How many, at least one.",
        "default": 1,
    }
    # The nested Struct is inlined, with no $ref left for the server to resolve.
    point = {
        "title": "Point",
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
        "required": ["x", "y"],
    }
    assert props["point"] == {"anyOf": [point, {"type": "null"}], "default": None}
    assert schema["required"] == ["text", "count", "ratio", "flag", "tags"]
    assert "$ref" not in json.dumps(schema)
    assert "$defs" not in schema


def test_a_recursive_type_keeps_its_reference() -> None:
    schema = tool_from_function(sample_tools.depth).parameters
    assert schema["type"] == "object"
    tree = schema["properties"]["tree"]
    assert tree["properties"]["children"]["items"] == {"$ref": "#/$defs/Tree"}
    assert schema["$defs"]["Tree"]["properties"]["label"] == {"type": "string"}


def test_annotated_description_beats_the_docstring() -> None:
    def f(n: Annotated[int, msgspec.Meta(description="from the hint")]) -> int:
        """Return n.

        Args:
            n: from the docstring
        """
        return n

    assert tool_from_function(f).parameters["properties"]["n"]["description"] == "from the hint"


def test_docstring_without_args_section_or_at_all() -> None:
    def plain(n: int) -> int:
        """One line.
        Still the first paragraph.

        Second paragraph, not shown.
        """
        return n

    def bare(n: int) -> int:
        return n

    tool = tool_from_function(plain)
    assert tool.description == "One line. Still the first paragraph."
    assert "description" not in tool.parameters["properties"]["n"]
    assert tool_from_function(bare).description == ""


def test_docstring_args_with_types_and_a_following_section() -> None:
    def f(a: int, b: str) -> None:
        """Do a thing.

        Args:
            a (int): first
                and more.
            b: second

        Returns:
            nothing: at all
        """

    props = tool_from_function(f).parameters["properties"]
    assert props["a"]["description"] == "first and more."
    assert props["b"]["description"] == "second"


def test_a_function_without_parameters() -> None:
    def ping() -> str:
        return "pong"

    tool = tool_from_function(ping)
    assert tool.parameters == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }
    assert tool.call("") == "pong"
    assert tool.call("{}") == "pong"
    assert tool.call({}) == "pong"


def test_name_can_be_given() -> None:
    assert tool_from_function(sample_tools.search, name="find").name == "find"


def test_call_with_parsed_and_json_arguments() -> None:
    tool = tool_from_function(sample_tools.search)
    assert tool.call({"query": "a", "limit": 2}) == ["a-0", "a-1"]
    assert tool.call('{"query": "b", "limit": 1}') == ["b-0"]
    assert len(tool.call('{"query": "c"}')) == 10


def test_nested_struct_arguments_are_converted() -> None:
    everything = tool_from_function(sample_tools.everything)
    args = {"text": "t", "count": 1, "ratio": 0.5, "flag": True, "tags": ["x"]}
    result = everything.call({**args, "point": {"x": 1, "y": 2}})
    assert result["point"] == sample_tools.Point(1, 2)
    assert result["mode"] == "fast"
    assert result["ratio"] == 0.5
    depth = tool_from_function(sample_tools.depth)
    assert depth.call('{"tree": {"label": "a", "children": [{"label": "b"}]}}') == 2


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        ('{"query": ', "arguments are not valid JSON: "),
        ("query=a", "arguments are not valid JSON: "),
        ('["a"]', "Expected `object`, got `array`"),
        ('"a"', "Expected `object`, got `str`"),
        ("{}", "Object missing required field `query`"),
        ('{"query": "a", "colour": 1}', "Object contains unknown field `colour`"),
        ('{"query": 5}', "Expected `str`, got `int` - at `$.query`"),
        ('{"query": "a", "limit": "3"}', "Expected `int`, got `str` - at `$.limit`"),
        ('{"query": "a", "limit": 1.5}', "Expected `int`, got `float` - at `$.limit`"),
        ({"query": "a", "limit": True}, "Expected `int`, got `bool` - at `$.limit`"),
        ({"limit": 3}, "Object missing required field `query`"),
        ({"query": "a", "extra": None}, "Object contains unknown field `extra`"),
        (["query"], "expected an object, got list"),
    ],
)
def test_bad_arguments_raise_an_error_for_the_model(arguments: Any, needle: str) -> None:
    tool = tool_from_function(sample_tools.search)
    with pytest.raises(ToolArgumentsError) as info:
        tool.call(arguments)
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)


def test_nested_bad_arguments_name_the_path() -> None:
    tool = tool_from_function(sample_tools.everything)
    args = {"text": "t", "count": 1, "ratio": 0.5, "flag": True, "tags": ["x"]}
    with pytest.raises(ToolArgumentsError, match=r"at `\$\.point\.y`"):
        tool.call({**args, "point": {"x": 1, "y": "2"}})
    with pytest.raises(ToolArgumentsError, match=r">= 1 - at `\$\.size`"):
        tool.call({**args, "size": 0})
    with pytest.raises(ToolArgumentsError, match=r"at `\$\.mode`"):
        tool.call({**args, "mode": "medium"})


def test_the_function_s_own_errors_propagate() -> None:
    tool = tool_from_function(sample_tools.fails)
    with pytest.raises(RuntimeError, match="on purpose"):
        tool.call({"reason": "on purpose"})


def _star_args(*names: str) -> None: ...


def _star_kwargs(**options: int) -> None: ...


def _positional_only(n: int, /) -> None: ...


def _no_hint(n) -> None:  # type: ignore[no-untyped-def]
    ...


@pytest.mark.parametrize(
    ("fn", "needle"),
    [
        (_star_args, "'names' is *args"),
        (_star_kwargs, "'options' is **kwargs"),
        (_positional_only, "'n' is positional-only"),
        (_no_hint, "'n' has no type hint"),
        (sample_tools.takes_thing, "no JSON schema"),
        (lambda: None, "tool name '<lambda>'"),
    ],
)
def test_functions_that_cannot_be_tools(fn: Any, needle: str) -> None:
    with pytest.raises(ToolLoadError) as info:
        tool_from_function(fn)
    assert needle in str(info.value)


def test_a_name_the_api_would_refuse() -> None:
    with pytest.raises(ToolLoadError, match="letters, digits"):
        tool_from_function(sample_tools.search, name="find things")
    with pytest.raises(ToolLoadError, match="letters, digits"):
        tool_from_function(sample_tools.search, name="x" * 65)


def test_load_tool_by_path() -> None:
    tool = load_tool("tests.sample_tools:search")
    assert isinstance(tool, Tool)
    assert tool.name == "search"
    assert tool.call({"query": "q", "limit": 1}) == ["q-0"]
    assert load_tool("tests.sample_tools:Point").name == "Point"


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("tests.sample_tools", "use an import path"),
        ("tests.sample_tools:", "use an import path"),
        (":search", "use an import path"),
        ("tests sample:search", "use an import path"),
        ("tests.no_such_module:search", "cannot import 'tests.no_such_module'"),
        ("tests.sample_tools:missing", "has no 'missing'"),
        ("tests.sample_tools:NOT_CALLABLE", "'NOT_CALLABLE' is not callable"),
        ("tests.sample_tools:takes_thing", "no JSON schema"),
    ],
)
def test_load_tool_errors_name_the_path(path: str, needle: str) -> None:
    with pytest.raises(ToolLoadError) as info:
        load_tool(path)
    assert f"tool {path!r}" in str(info.value)
    assert needle in str(info.value)


def test_load_tool_from_a_module_that_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "laneway_broken_tools.py").write_text("raise RuntimeError('will not load')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ToolLoadError, match="will not load"):
        load_tool("laneway_broken_tools:anything")


def test_registry_with_builtins_and_loaded_tools() -> None:
    registry = ToolRegistry.with_builtins(["tests.sample_tools:search"])
    assert registry.names() == ["current_time", "calculator", "search"]
    assert registry.get("search") is not None
    assert registry.get("nope") is None
    assert ToolRegistry.with_builtins().names() == ["current_time", "calculator"]
    assert ToolRegistry().names() == []


def test_registry_refuses_two_tools_of_one_name() -> None:
    with pytest.raises(ToolLoadError, match="two tools are named 'search'"):
        ToolRegistry.with_builtins(["tests.sample_tools:search", "tests.sample_tools:search"])
    with pytest.raises(ToolLoadError, match="two tools are named 'calculator'"):
        ToolRegistry.with_builtins(["tests.sample_tools:calculator"])


def test_openai_tools_format() -> None:
    registry = ToolRegistry.with_builtins(["tests.sample_tools:search"])
    search = registry.get("search")
    assert search is not None
    assert registry.openai_tools(["search"]) == [
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": search.description,
                "parameters": search.parameters,
            },
        }
    ]
    offered = registry.openai_tools(["calculator", "current_time"])
    assert [t["function"]["name"] for t in offered] == ["calculator", "current_time"]
    assert registry.openai_tools([]) == []
    # What is sent to the server must be plain JSON.
    assert json.loads(json.dumps(offered)) == offered


def test_openai_tools_refuses_an_unknown_name() -> None:
    registry = ToolRegistry.with_builtins()
    with pytest.raises(UnknownToolError) as info:
        registry.openai_tools(["calculator", "search"])
    assert isinstance(info.value, KeyError)
    assert str(info.value) == "unknown tool 'search'; enabled: current_time, calculator"
