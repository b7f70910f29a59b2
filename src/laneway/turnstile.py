"""A turnstile: callers numbered in advance pass it one at a time, in number order.

Runs are numbered on the loop as they are reserved, and each stores its number
with its "queued" status: a restart queues the runs it finds queued again in
that order. Between the two, each writes, and writes that end together come
back to the loop in an order of their own (under trio, a random one). A run
therefore enters the run lane only once every run numbered before it has
entered or given up, so that the lane holds runs in the order of their stored
numbers, and a restart gives each the place it had.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import anyio


class Turnstile:
    """Numbers from :meth:`take`; :meth:`wait_turn` returns once every smaller
    number taken has been released. Use on the event loop only.

    Every number taken must be released, whatever happens to its holder, or
    every later one waits forever: release it in a ``finally`` that begins as
    soon as it is taken.
    """

    def __init__(self, after: int = 0) -> None:
        self._next = after + 1
        # The numbers taken and not yet released.
        self._pending: set[int] = set()
        # The same, in the order taken, which is ascending; released ones leave
        # its front lazily (see _head).
        self._order: deque[int] = deque()
        # The event of each waiter whose turn has not come, by number.
        self._waiters: dict[int, anyio.Event] = {}

    @property
    def pending(self) -> int:
        """How many numbers are taken and not yet released."""
        return len(self._pending)

    def take(self) -> int:
        number = self._next
        self._next += 1
        self._pending.add(number)
        self._order.append(number)
        return number

    async def wait_turn(self, number: int) -> None:
        """Wait until ``number`` is the smallest number not yet released."""
        if number not in self._pending:
            raise ValueError(f"number {number} was not taken, or is released already")
        while self._head() != number:
            self._waiters[number] = event = anyio.Event()
            try:
                await event.wait()
            finally:
                del self._waiters[number]

    def release(self, number: int) -> None:
        """Let the numbers after ``number`` pass it; releasing again does nothing."""
        self._pending.discard(number)
        head = self._head()
        if head in self._waiters:
            self._waiters[head].set()

    @contextmanager
    def held(self, number: int) -> Iterator[None]:
        """Release ``number`` on leaving, however it is left."""
        try:
            yield
        finally:
            self.release(number)

    def _head(self) -> int | None:
        order = self._order
        while order and order[0] not in self._pending:
            order.popleft()
        return order[0] if order else None
