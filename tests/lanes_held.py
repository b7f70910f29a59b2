"""Holding a lane's tokens from a test, so that the code under test finds it full."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from laneway.lanes import Lane


@asynccontextmanager
async def lane_held(lane: Lane) -> AsyncIterator[anyio.Event]:
    """Hold one token of ``lane`` until the yielded event is set or the block
    ends. With a lane of size 1 and max_waiting 0, every other call is refused."""
    held, release = anyio.Event(), anyio.Event()

    async def hold() -> None:
        # Its own task: the test task must not itself hold the lane it asks for.
        async with lane.hold():
            held.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await held.wait()
        try:
            yield release
        finally:
            release.set()
