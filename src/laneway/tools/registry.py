"""The tools enabled on a server, by name."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Self

from laneway.tools.builtin import BUILTIN_FUNCTIONS
from laneway.tools.errors import ToolLoadError, UnknownToolError
from laneway.tools.loading import load_tool
from laneway.tools.tool import Tool, tool_from_function


class ToolRegistry:
    """Tools by name; names are unique, since the model calls a tool by name."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ToolLoadError(f"two tools are named {tool.name!r}")
            self._tools[tool.name] = tool

    @classmethod
    def with_builtins(cls, paths: Sequence[str] = ()) -> Self:
        """The built-in tools, always enabled, and those at ``paths``."""
        builtins = [tool_from_function(fn) for fn in BUILTIN_FUNCTIONS]
        return cls([*builtins, *(load_tool(path) for path in paths)])

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def openai_tools(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """The chat-completions ``tools`` parameter offering the named tools."""
        offered = []
        for name in names:
            tool = self._tools.get(name)
            if tool is None:
                raise UnknownToolError(
                    f"unknown tool {name!r}; enabled: {', '.join(self._tools) or 'none'}"
                )
            function = {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
            }
            offered.append({"type": "function", "function": function})
        return offered
