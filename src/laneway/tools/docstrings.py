"""What a tool's docstring tells the model: its summary, and a Google-style
``Args:`` section describing each parameter."""

from __future__ import annotations

import inspect
import re

_SECTION = re.compile(r"^(Args|Arguments):\s*$")
# "name: text" or "name (type): text"; the type is the signature's business.
_ENTRY = re.compile(r"^(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _lines(doc: str | None) -> list[str]:
    return inspect.cleandoc(doc).splitlines() if doc else []


def summary(doc: str | None) -> str:
    """The first paragraph, on one line; empty when it is the ``Args:`` section."""
    paragraph: list[str] = []
    for line in _lines(doc):
        if not line.strip() or _SECTION.match(line):
            break
        paragraph.append(line.strip())
    return " ".join(paragraph)


def argument_descriptions(doc: str | None) -> dict[str, str]:
    """Each parameter's description from the ``Args:`` section; continuation
    lines (indented deeper than the entry) are joined to it."""
    descriptions: dict[str, str] = {}
    lines = _lines(doc)
    start = next((i for i, line in enumerate(lines) if _SECTION.match(line)), None)
    if start is None:
        return descriptions
    entry_indent: int | None = None
    current: str | None = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            break  # the next section, or prose after the arguments
        if entry_indent is None:
            entry_indent = indent
        match = _ENTRY.match(line.strip())
        if indent == entry_indent and match:
            current = match.group(1)
            descriptions[current] = match.group(2).strip()
        elif current is not None:
            descriptions[current] = f"{descriptions[current]} {line.strip()}".strip()
    return descriptions
