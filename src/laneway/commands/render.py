"""How events read in a terminal, for ``laneway events`` and ``laneway chat``.

One line each, cut to a readable length: the stored event keeps everything,
and ``--json`` prints it whole.
"""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text

from laneway.models import Event

# Arguments and results longer than this are cut, with an ellipsis.
MAX_VALUE_CHARS = 80

KIND_STYLES = {
    "message": "",
    "tool_call": "yellow",
    "tool_result": "yellow",
    "status": "dim",
    "error": "bold red",
}


def shorten(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compact(value: Any) -> str:
    """A value as short JSON."""
    return shorten(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))


def call_text(name: str, arguments: Any) -> str:
    """A tool call as ``name(k=v, ...)``, each value as JSON."""
    if isinstance(arguments, dict):
        inner = ", ".join(f"{key}={compact(value)}" for key, value in arguments.items())
    else:
        inner = compact(arguments)
    return f"{name}({shorten(inner)})"


def result_text(data: dict[str, Any]) -> str:
    if "error" in data:
        return f"error: {shorten(str(data['error']))}"
    return compact(data.get("output"))


def status_text(data: dict[str, Any]) -> str:
    reason = data.get("reason")
    return f"{data.get('status')}" + (f" ({reason})" if reason else "")


def summary(event: Event) -> str:
    """What an event says, in a few words."""
    data = event.data
    match event.kind:
        case "message":
            return str(data.get("text", ""))
        case "tool_call":
            return call_text(str(data.get("name")), data.get("arguments"))
        case "tool_result":
            return f"{data.get('name')} -> {result_text(data)}"
        case "status":
            return status_text(data)
        case _:
            return f"{data.get('type', 'error')}: {data.get('message', '')}"


def event_line(event: Event) -> Text:
    """``seq time source kind summary``, the time of day in UTC to the millisecond."""
    clock = event.timestamp[11:23]
    line = Text(f"{event.seq:>5}  {clock}  {event.source:<6}  {event.kind:<11}  ", style="dim")
    line.append(summary(event), style=KIND_STYLES[event.kind])
    return line
