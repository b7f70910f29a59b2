"""A tool: a plain Python function the model may call, with the JSON schema of
its arguments generated from its signature and docstring."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from laneway.tools.docstrings import argument_descriptions, summary
from laneway.tools.errors import ToolArgumentsError, ToolLoadError
from laneway.tools.schema import arguments_struct, parameters_schema

# What the chat-completions API accepts as a function name.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Tool:
    """Build with :func:`tool_from_function`."""

    name: str
    description: str
    # A JSON schema object for the arguments, shown to the model.
    parameters: dict[str, Any]
    function: Callable[..., Any] = field(repr=False)
    # The Struct the schema was made from; it validates what the model sends.
    arguments_type: type[msgspec.Struct] = field(repr=False)

    def call(self, arguments: str | Mapping[str, Any]) -> Any:
        """Call the function with the model's arguments, as JSON text or parsed.

        Arguments that do not fit raise :class:`ToolArgumentsError`; whatever the
        function itself raises propagates unchanged.
        """
        values = self._convert(arguments)
        return self.function(**{name: getattr(values, name) for name in values.__struct_fields__})

    def _convert(self, arguments: str | Mapping[str, Any]) -> msgspec.Struct:
        """The model's arguments validated and converted to the function's types."""
        if isinstance(arguments, str):
            # Some servers send no text at all for a call without arguments.
            text = arguments if arguments.strip() else "{}"
            try:
                return msgspec.json.decode(text, type=self.arguments_type)
            except msgspec.ValidationError as exc:
                raise ToolArgumentsError(f"invalid arguments: {exc}") from exc
            except msgspec.DecodeError as exc:
                raise ToolArgumentsError(f"arguments are not valid JSON: {exc}") from exc
        if not isinstance(arguments, Mapping):
            kind = type(arguments).__name__
            raise ToolArgumentsError(f"invalid arguments: expected an object, got {kind}")
        try:
            return msgspec.convert(dict(arguments), self.arguments_type)
        except msgspec.ValidationError as exc:
            raise ToolArgumentsError(f"invalid arguments: {exc}") from exc


def tool_from_function(fn: Callable[..., Any], name: str | None = None) -> Tool:
    """Make a tool of ``fn``; its name defaults to the function's own.

    Every parameter needs a type hint msgspec can describe, and may be passed by
    keyword. Descriptions come from ``Annotated[T, msgspec.Meta(description=...)]``
    or from the docstring's ``Args:`` section; the tool's description is the
    docstring's first paragraph.
    """
    tool_name = name if name is not None else getattr(fn, "__name__", "")
    if not _NAME.match(tool_name):
        raise ToolLoadError(f"tool name {tool_name!r} is not 1 to 64 letters, digits, '_' or '-'")
    if not callable(fn):
        raise ToolLoadError(f"tool {tool_name!r} is not callable")
    doc = getattr(fn, "__doc__", None)
    struct = arguments_struct(fn, tool_name, argument_descriptions(doc))
    return Tool(
        name=tool_name,
        description=summary(doc),
        parameters=parameters_schema(struct),
        function=fn,
        arguments_type=struct,
    )
