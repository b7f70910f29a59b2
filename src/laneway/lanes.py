"""Lanes: bounded, counted, rank-ordered capacity limiters for blocking work.

A :class:`Lane` wraps an :class:`anyio.CapacityLimiter`. It refuses new waiters
past ``max_waiting`` (:class:`LaneFull`), counts everything it does, can be resized
live, and enforces an order between lanes: code that holds a lane may only ask
for a lane of *higher* rank, so nested acquisition can never deadlock. The lane
currently held travels in a context variable, which anyio copies into worker
threads and back through ``anyio.from_thread``.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Literal, TypeVar, TypeVarTuple, Unpack

import anyio
import anyio.to_thread
import msgspec

from laneway.histogram import Histogram, HistogramSnapshot
from laneway.waitqueue import WaitQueue

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

LaneName = Literal["run", "tool", "io"]
LanesMode = Literal["isolated", "shared"]
LANE_NAMES: tuple[LaneName, ...] = ("run", "tool", "io")
RANKS: dict[LaneName, int] = {"run": 0, "tool": 1, "io": 2}

# The size of the old design's shared pool (anyio's default thread limiter).
SHARED_POOL_SIZE = 40

# Until a lane has finished any work, retry_after assumes this service time (a
# lane may be told another: the io lane's calls take milliseconds).
DEFAULT_SERVICE_S = 1.0
IO_SERVICE_S = 0.01
# No estimate is given beyond this: a queue's pace changes well within a minute,
# and a client told to wait hours (10,000 queued runs, before any had finished,
# once gave 5,001 s) would rather give up.
MAX_RETRY_AFTER_S = 60.0
_EWMA_WEIGHT = 0.2

_held: ContextVar[Lane | None] = ContextVar("laneway_held_lane", default=None)


class LaneError(Exception):
    """Base class of the errors a lane raises."""


class LaneFull(LaneError):
    """The lane already has ``max_waiting`` waiters; try again after ``retry_after`` s."""

    def __init__(self, lane: str, waiting: int, retry_after: float) -> None:
        super().__init__(f"lane {lane!r} is full: {waiting} callers already waiting")
        self.lane = lane
        self.waiting = waiting
        self.retry_after = retry_after


class LaneOrderError(LaneError):
    """A lane was requested while holding a lane of the same or a higher rank."""

    def __init__(self, held: str, requested: str) -> None:
        super().__init__(
            f"lane {requested!r} requested while holding lane {held!r}: a lane may only "
            "call a lane of higher rank (run < tool < io)"
        )
        self.held = held
        self.requested = requested


def current_lane() -> str | None:
    """The name of the lane the calling code runs in, if any."""
    held = _held.get()
    return None if held is None else held.name


class LaneSnapshot(msgspec.Struct, frozen=True):
    """One consistent reading of a lane's counters.

    ``admitted == completed + failed + running`` always holds. ``failed`` counts
    work that raised, including work cancelled after it started. ``running`` may
    exceed ``size`` after a shrink, until the lane has drained.
    """

    name: str
    rank: int
    size: int
    running: int
    waiting: int
    max_waiting: int
    peak_waiting: int
    admitted: int
    completed: int
    failed: int
    cancelled_waiting: int
    rejected: int
    oldest_wait_s: float
    wait_time: HistogramSnapshot
    service_time: HistogramSnapshot


class Lane:
    """A named, ranked capacity limiter with bounded waiting and counters.

    Create it inside a running event loop (the lifespan of the app), since the
    underlying limiter belongs to the running backend.
    """

    def __init__(
        self,
        name: str,
        rank: int,
        size: int,
        max_waiting: int,
        *,
        limiter: anyio.CapacityLimiter | None = None,
        initial_service_s: float = DEFAULT_SERVICE_S,
    ) -> None:
        if size < 1:
            raise ValueError("a lane's size must be at least 1")
        if max_waiting < 0:
            raise ValueError("max_waiting must not be negative")
        self.name = name
        self.rank = rank
        self.max_waiting = max_waiting
        self._limiter = limiter if limiter is not None else anyio.CapacityLimiter(size)
        # The lane's own token is the real bound on threads; this limiter only
        # satisfies to_thread's signature without adding a second, shared bound.
        self._thread_limiter = anyio.CapacityLimiter(math.inf)
        self._waiters = WaitQueue()
        self._running = 0
        self._peak_waiting = 0
        self._admitted = 0
        self._completed = 0
        self._failed = 0
        self._cancelled_waiting = 0
        self._rejected = 0
        self._service_ewma: float | None = None
        self._initial_service_s = initial_service_s
        self._wait_time = Histogram()
        self._service_time = Histogram()

    @property
    def size(self) -> int:
        return int(self._limiter.total_tokens)

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def free_tokens(self) -> int:
        """Tokens a caller would get now without waiting. Safe to read from a
        worker thread, as an estimate: others may take them meanwhile."""
        return max(0, int(self._limiter.available_tokens) - len(self._waiters))

    def room(self) -> int:
        """How many more callers :meth:`hold` would take now, one after another,
        before it refused one: the free tokens, then the places left in the queue."""
        return self.free_tokens() + max(0, self.max_waiting - len(self._waiters))

    def resize(self, size: int) -> None:
        """Change the number of tokens at once.

        Growing hands free tokens to waiters immediately. Shrinking interrupts
        nothing: running work keeps its tokens and the lane drains to the new size.
        """
        if size < 1:
            raise ValueError("a lane's size must be at least 1")
        self._limiter.total_tokens = size

    def position(self, ticket: object) -> int | None:
        """The 1-based queue position of the waiter registered as ``ticket``."""
        return self._waiters.position(ticket)

    def retry_after(self) -> float:
        """Seconds until a new caller would likely get a token, from queue depth and
        the recent mean service time; at most :data:`MAX_RETRY_AFTER_S`."""
        service = self._service_ewma if self._service_ewma is not None else self._initial_service_s
        estimate = (len(self._waiters) + 1) * service / max(self.size, 1)
        return min(MAX_RETRY_AFTER_S, max(0.001, estimate))

    @asynccontextmanager
    async def hold(
        self,
        ticket: object | None = None,
        on_enqueued: Callable[[], object] | None = None,
    ) -> AsyncIterator[None]:
        """Hold one token of this lane for the span of the ``async with`` body.

        ``ticket`` names the waiter for :meth:`position`; it must be unique among
        this lane's waiters. ``on_enqueued`` is called once the caller either has
        its token or is in the queue, i.e. once admission can no longer fail.
        Raises :class:`LaneOrderError` when the caller already holds a lane of the
        same or higher rank, and :class:`LaneFull` when ``max_waiting`` callers
        already wait.
        """
        held = _held.get()
        if held is not None and held.rank >= self.rank:
            raise LaneOrderError(held.name, self.name)
        borrower = object()
        requested = time.perf_counter()
        try:
            self._limiter.acquire_on_behalf_of_nowait(borrower)
        except anyio.WouldBlock:
            key = borrower if ticket is None else ticket
            await self._wait_for_token(borrower, requested, key, on_enqueued)
        else:
            if on_enqueued is not None:
                on_enqueued()
        started = time.perf_counter()
        self._wait_time.observe(started - requested)
        self._admitted += 1
        self._running += 1
        context_token = _held.set(self)
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            _held.reset(context_token)
            self._limiter.release_on_behalf_of(borrower)
            self._finish(time.perf_counter() - started, succeeded)

    def check_admission(self) -> None:
        """Raise :class:`LaneFull` (counted as rejected) if :meth:`hold` would refuse
        a caller now. A later hold can still be refused if others queue meanwhile."""
        blocked = self._limiter.available_tokens < 1 or len(self._waiters) > 0
        if blocked and len(self._waiters) >= self.max_waiting:
            raise self._reject()

    def _reject(self) -> LaneFull:
        self._rejected += 1
        return LaneFull(self.name, len(self._waiters), self.retry_after())

    async def _wait_for_token(
        self,
        borrower: object,
        requested: float,
        key: object,
        on_enqueued: Callable[[], object] | None,
    ) -> None:
        if len(self._waiters) >= self.max_waiting:
            raise self._reject()
        self._waiters.add(key, requested)
        self._peak_waiting = max(self._peak_waiting, len(self._waiters))
        try:
            if on_enqueued is not None:
                on_enqueued()
            await self._limiter.acquire_on_behalf_of(borrower)
        except BaseException:
            self._cancelled_waiting += 1
            raise
        finally:
            self._waiters.remove(key)

    def _finish(self, service_s: float, succeeded: bool) -> None:
        self._running -= 1
        if succeeded:
            self._completed += 1
        else:
            self._failed += 1
        self._service_time.observe(service_s)
        if self._service_ewma is None:
            self._service_ewma = service_s
        else:
            self._service_ewma += _EWMA_WEIGHT * (service_s - self._service_ewma)

    async def run_sync(self, fn: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
        """Run ``fn(*args)`` in a worker thread while holding one token.

        A call cancelled after its thread has started keeps its token until the
        thread really ends, so the lane never has more threads than tokens.
        """
        async with self.hold():
            return await self.to_thread(fn, *args)

    async def run_sync_patiently(self, fn: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
        """:meth:`run_sync`, but a full queue is waited out rather than raised:
        for calls the server owes to work it has already accepted (a stream's
        replay, a run's status), which must not fail because others queue.
        Each refusal is still counted as rejected."""
        while True:
            try:
                return await self.run_sync(fn, *args)
            except LaneFull as exc:
                await anyio.sleep(exc.retry_after)

    async def to_thread(
        self, fn: Callable[[Unpack[Ts]], T], *args: *Ts, abandon_on_cancel: bool = False
    ) -> T:
        """Run ``fn(*args)`` in a worker thread on a token the caller already holds
        through :meth:`hold`.

        ``abandon_on_cancel`` exists for shutdown past its grace period, when a
        thread that will not return in time is left behind so the process can exit.
        """
        if _held.get() is not self:
            raise RuntimeError(f"to_thread needs a token of lane {self.name!r}: use hold()")
        return await anyio.to_thread.run_sync(
            fn, *args, abandon_on_cancel=abandon_on_cancel, limiter=self._thread_limiter
        )

    def snapshot(self) -> LaneSnapshot:
        oldest = self._waiters.oldest_requested()
        return LaneSnapshot(
            name=self.name,
            rank=self.rank,
            size=self.size,
            running=self._running,
            waiting=len(self._waiters),
            max_waiting=self.max_waiting,
            peak_waiting=self._peak_waiting,
            admitted=self._admitted,
            completed=self._completed,
            failed=self._failed,
            cancelled_waiting=self._cancelled_waiting,
            rejected=self._rejected,
            oldest_wait_s=0.0 if oldest is None else time.perf_counter() - oldest,
            wait_time=self._wait_time.snapshot(),
            service_time=self._service_time.snapshot(),
        )


class LanesConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Sizes and queue bounds of the three lanes."""

    mode: LanesMode = "isolated"
    run_size: int = 10
    tool_size: int = 16
    io_size: int = 8
    run_max_waiting: int = 10_000
    tool_max_waiting: int = 1_000
    io_max_waiting: int = 1_000


class Lanes:
    """The server's three lanes: run (rank 0), tool (rank 1) and io (rank 2)."""

    def __init__(self, run: Lane, tool: Lane, io: Lane, mode: LanesMode) -> None:
        self.run = run
        self.tool = tool
        self.io = io
        self.mode: LanesMode = mode

    @classmethod
    def create(cls, config: LanesConfig | None = None) -> Lanes:
        """Build the lanes; call inside the running event loop.

        In ``shared`` mode the run and io lanes draw on one limiter of
        :data:`SHARED_POOL_SIZE` tokens, as the old single shared pool did. The tool
        lane stays separate because the old design gave each tool batch a fresh
        pool, so shared mode starves short calls but cannot deadlock.
        """
        c = config if config is not None else LanesConfig()
        tool = Lane("tool", RANKS["tool"], c.tool_size, c.tool_max_waiting)
        if c.mode == "shared":
            pool = anyio.CapacityLimiter(SHARED_POOL_SIZE)
            run = Lane("run", RANKS["run"], SHARED_POOL_SIZE, c.run_max_waiting, limiter=pool)
            io = Lane(
                "io",
                RANKS["io"],
                SHARED_POOL_SIZE,
                c.io_max_waiting,
                limiter=pool,
                initial_service_s=IO_SERVICE_S,
            )
        else:
            run = Lane("run", RANKS["run"], c.run_size, c.run_max_waiting)
            io = Lane(
                "io", RANKS["io"], c.io_size, c.io_max_waiting, initial_service_s=IO_SERVICE_S
            )
        return cls(run, tool, io, c.mode)

    def __getitem__(self, name: str) -> Lane:
        lanes: dict[str, Lane] = {"run": self.run, "tool": self.tool, "io": self.io}
        return lanes[name]

    def __iter__(self) -> Iterator[Lane]:
        return iter((self.run, self.tool, self.io))

    def snapshot(self) -> dict[str, LaneSnapshot]:
        return {lane.name: lane.snapshot() for lane in self}
