"""A lane's waiters in arrival order, with each one's place found fast."""

from __future__ import annotations

from bisect import bisect_left


class WaitQueue:
    """A lane's waiters in arrival order, which is the order the limiter serves.

    Each waiter's 1-based place is found by bisection rather than by walking the
    queue: every status read of a queued conversation asks for it, on the event
    loop, and the run queue may hold 10,000 (walking it took ~0.4 ms a read).
    """

    def __init__(self) -> None:
        # key -> (arrival ticket, time requested); insertion-ordered, oldest first.
        self._entries: dict[object, tuple[int, float]] = {}
        # The tickets of the waiters still here, ascending.
        self._tickets: list[int] = []
        self._next_ticket = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: object, requested: float) -> None:
        ticket = self._next_ticket
        self._next_ticket += 1
        self._entries[key] = (ticket, requested)
        self._tickets.append(ticket)

    def remove(self, key: object) -> None:
        ticket, _ = self._entries.pop(key)
        del self._tickets[bisect_left(self._tickets, ticket)]

    def position(self, key: object) -> int | None:
        entry = self._entries.get(key)
        return None if entry is None else bisect_left(self._tickets, entry[0]) + 1

    def oldest_requested(self) -> float | None:
        first = next(iter(self._entries.values()), None)
        return None if first is None else first[1]
