"""Loading a tool by import path, ``"package.module:function"``."""

from __future__ import annotations

import importlib
import re

from laneway.tools.errors import ToolLoadError
from laneway.tools.tool import Tool, tool_from_function

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def load_tool(path: str) -> Tool:
    """Import the function named by ``path`` and make a tool of it; every
    failure raises :class:`ToolLoadError` naming the path."""
    module_name, sep, attr = path.partition(":")
    if not sep or not _DOTTED.match(module_name) or not _DOTTED.match(attr):
        raise ToolLoadError(f"tool {path!r}: use an import path 'package.module:function'")
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:  # the module's own code ran, and may raise anything
        raise ToolLoadError(f"tool {path!r}: cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ToolLoadError(f"tool {path!r}: {module_name!r} has no {attr!r}") from None
    if not callable(target):
        raise ToolLoadError(f"tool {path!r}: {attr!r} is not callable")
    try:
        return tool_from_function(target, name=attr.rpartition(".")[2])
    except ToolLoadError as exc:
        raise ToolLoadError(f"tool {path!r}: {exc}") from exc
