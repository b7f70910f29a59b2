"""Functions for tool tests, importable by path as ``tests.sample_tools:NAME``."""

from __future__ import annotations

import threading
from typing import Annotated, Literal

import msgspec


class Point(msgspec.Struct):
    x: int
    y: int


class Tree(msgspec.Struct):
    label: str
    children: list[Tree] = []


def search(query: str, limit: int = 10) -> list[str]:
    """Search the catalogue for items matching a query.

    Matches are by substring, case-insensitively.

    Args:
        query: The text to look for.
        limit: The most results to return;
            fewer when fewer match.
    """
    return [f"{query}-{n}" for n in range(limit)]


def everything(
    text: str,
    count: int,
    ratio: float,
    flag: bool,
    tags: list[str],
    mode: Literal["fast", "slow"] = "fast",
    note: str | None = None,
    size: Annotated[int, msgspec.Meta(ge=1, description="How many, at least one.")] = 1,
    point: Point | None = None,
) -> dict[str, object]:
    """Echo the arguments back."""
    return dict(locals())


def depth(tree: Tree) -> int:
    """The depth of a tree."""
    return 1 + max((depth(child) for child in tree.children), default=0)


def fails(reason: str) -> None:
    """Always raises."""
    raise RuntimeError(reason)


NOT_CALLABLE = 42


class Thing:
    """Not a type msgspec can describe."""


def takes_thing(thing: Thing) -> None:
    """Takes something without a schema."""


def calculator(expression: str) -> str:
    """Named like a built-in tool, which it may not replace."""
    return expression


# Two calls of `meet` return only if they are under way at the same time.
MEETING = threading.Barrier(2)


def meet(name: str) -> str:
    """Wait for one other caller, for at most ten seconds."""
    MEETING.wait(10)
    return f"{name} met"
