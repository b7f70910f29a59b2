"""Both clients of :mod:`laneway.client` behind one test body: a sync client's
answers are used as they come, an async client's are awaited. A sync client's
blocking calls hold up the test's event loop, which is harmless here: the
server is another process."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from contextlib import aclosing, asynccontextmanager
from typing import Any, Literal, TypeVar

from laneway.client import AsyncClient, Client

T = TypeVar("T")
Kind = Literal["sync", "async"]
KINDS: tuple[Kind, ...] = ("sync", "async")


@asynccontextmanager
async def open_client(kind: Kind, base_url: str, **options: Any) -> AsyncIterator[Any]:
    if kind == "sync":
        with Client(base_url, **options) as client:
            yield client
    else:
        async with AsyncClient(base_url, **options) as client:
            yield client


async def done(answer: Any) -> Any:
    """What a client method answered, awaited if it is the async client's."""
    return await answer if inspect.isawaitable(answer) else answer


async def collect(items: Iterable[T] | AsyncIterable[T]) -> list[T]:
    if isinstance(items, AsyncIterable):
        return [item async for item in items]
    return list(items)


async def take_until(items: Iterable[T] | AsyncIterable[T], last: Callable[[T], bool]) -> list[T]:
    """Items up to the first for which ``last`` is true, the iterator closed then."""
    taken: list[T] = []
    if isinstance(items, AsyncIterable):
        async with aclosing(items) as stream:  # type: ignore[type-var]
            async for item in stream:
                taken.append(item)
                if last(item):
                    return taken
    else:
        for item in items:
            taken.append(item)
            if last(item):
                break
        items.close()  # type: ignore[attr-defined]
    return taken
