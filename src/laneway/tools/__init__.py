"""Tools an LLM agent may call: plain Python functions with type hints.

A tool's JSON schema is generated from its signature and docstring with msgspec,
and the same msgspec type validates the arguments the model sends, so the
schema shown and the check made cannot drift apart. Tools are enabled on the
server by import path (``--tool package.module:function``); ``current_time``
and ``calculator`` are always enabled.
"""

from __future__ import annotations

from laneway.tools.errors import ToolArgumentsError, ToolLoadError, UnknownToolError
from laneway.tools.loading import load_tool
from laneway.tools.registry import ToolRegistry
from laneway.tools.tool import Tool, tool_from_function

__all__ = [
    "Tool",
    "ToolArgumentsError",
    "ToolLoadError",
    "ToolRegistry",
    "UnknownToolError",
    "load_tool",
    "tool_from_function",
]
