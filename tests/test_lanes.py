from __future__ import annotations

import math
import threading

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from laneway.lanes import (
    MAX_RETRY_AFTER_S,
    Lane,
    LaneFull,
    LaneOrderError,
    Lanes,
    LanesConfig,
    current_lane,
)

pytestmark = pytest.mark.anyio

GUARD_S = 10  # only a guard against hangs, never a speed assertion


async def wait_until(predicate: object, timeout: float = GUARD_S) -> None:
    assert callable(predicate)
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.001)


def check_invariant(lane: Lane) -> None:
    snap = lane.snapshot()
    assert snap.admitted == snap.completed + snap.failed + snap.running


async def test_run_sync_returns_value_and_counts() -> None:
    lane = Lane("io", 2, size=2, max_waiting=4)
    assert await lane.run_sync(lambda a, b: a + b, 2, 3) == 5
    snap = lane.snapshot()
    assert (snap.admitted, snap.completed, snap.failed, snap.running) == (1, 1, 0, 0)
    assert snap.wait_time.count == 1
    assert snap.service_time.count == 1


async def test_exception_in_worker_counts_failed() -> None:
    lane = Lane("io", 2, size=1, max_waiting=4)

    def boom() -> None:
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        await lane.run_sync(boom)
    snap = lane.snapshot()
    assert (snap.admitted, snap.completed, snap.failed, snap.running) == (1, 0, 1, 0)


async def test_io_lane_answers_while_run_lane_is_saturated() -> None:
    lanes = Lanes.create(LanesConfig(run_size=2, io_size=2, run_max_waiting=50))
    release = threading.Event()
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(lanes.run.run_sync, release.wait)
        await wait_until(lambda: lanes.run.running == 2 and lanes.run.waiting == 8)
        with anyio.fail_after(GUARD_S):
            for i in range(20):
                assert await lanes.io.run_sync(lambda x: x * 2, i) == i * 2
        # The io calls completed while every run was still blocked.
        assert lanes.run.running == 2
        assert lanes.run.snapshot().completed == 0
        release.set()
    assert lanes.run.snapshot().completed == 10


async def test_shared_mode_starves_io_behind_runs() -> None:
    lanes = Lanes.create(LanesConfig(mode="shared"))
    assert lanes.run.size == lanes.io.size == 40
    release = threading.Event()
    io_done = anyio.Event()

    async def io_call() -> None:
        await lanes.io.run_sync(lambda: None)
        io_done.set()

    async with anyio.create_task_group() as tg:
        for _ in range(40):
            tg.start_soon(lanes.run.run_sync, release.wait)
        await wait_until(lambda: lanes.run.running == 40)
        tg.start_soon(io_call)
        await wait_until(lambda: lanes.io.waiting == 1)
        assert not io_done.is_set()
        release.set()
    assert io_done.is_set()


async def test_lane_full_at_max_waiting_with_retry_after() -> None:
    lane = Lane("run", 0, size=1, max_waiting=2)
    release = threading.Event()
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(lane.run_sync, release.wait)
        await wait_until(lambda: lane.running == 1 and lane.waiting == 2)
        with pytest.raises(LaneFull) as info:
            await lane.run_sync(lambda: None)
        err = info.value
        assert err.lane == "run"
        assert err.waiting == 2
        assert 0 < err.retry_after < 3600
        assert math.isfinite(err.retry_after)
        snap = lane.snapshot()
        assert snap.rejected == 1
        assert snap.peak_waiting == 2
        assert snap.oldest_wait_s >= 0
        release.set()
    check_invariant(lane)


async def test_check_admission_refuses_exactly_when_hold_would() -> None:
    lane = Lane("run", 0, size=1, max_waiting=1)
    release = threading.Event()
    lane.check_admission()  # a free token
    async with anyio.create_task_group() as tg:
        tg.start_soon(lane.run_sync, release.wait)
        await wait_until(lambda: lane.running == 1)
        lane.check_admission()  # no token, but room in the queue
        tg.start_soon(lane.run_sync, release.wait)
        await wait_until(lambda: lane.waiting == 1)
        with pytest.raises(LaneFull):
            lane.check_admission()
        assert lane.snapshot().rejected == 1
        release.set()
    lane.check_admission()
    check_invariant(lane)


async def test_room_counts_free_tokens_then_places_in_the_queue() -> None:
    lane = Lane("run", 0, size=2, max_waiting=3)
    release = threading.Event()
    assert lane.room() == 5
    async with anyio.create_task_group() as tg:
        for taken in range(1, 6):
            tg.start_soon(lane.run_sync, release.wait)
            await wait_until(lambda n=taken: lane.running + lane.waiting == n)
            assert lane.room() == 5 - taken
        with pytest.raises(LaneFull):
            lane.check_admission()
        release.set()
    assert lane.room() == 5
    check_invariant(lane)


async def test_retry_after_is_sane_before_any_service_time_and_capped() -> None:
    lanes = Lanes.create(LanesConfig(run_size=2, run_max_waiting=10_000))
    release = anyio.Event()

    async def hold_run() -> None:
        async with lanes.run.hold():
            await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(2 + 10_000):
            tg.start_soon(hold_run)
        await wait_until(lambda: lanes.run.waiting == 10_000)
        # Nothing has completed: 10,000 waiting once gave 5,001 s.
        assert lanes.run.retry_after() == MAX_RETRY_AFTER_S
        release.set()
    # An io call is assumed to take milliseconds until the lane has measured one.
    assert lanes.io.retry_after() < 0.1


async def test_retry_after_grows_with_queue_depth_and_service_time() -> None:
    lane = Lane("run", 0, size=2, max_waiting=100)
    await lane.run_sync(lambda: None)
    short = lane.retry_after()
    release = threading.Event()
    async with anyio.create_task_group() as tg:
        for _ in range(12):
            tg.start_soon(lane.run_sync, release.wait)
        await wait_until(lambda: lane.waiting == 10)
        assert lane.retry_after() > short
        release.set()


async def test_resize_up_wakes_waiters_at_once() -> None:
    lane = Lane("run", 0, size=1, max_waiting=10)
    release = threading.Event()
    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(lane.run_sync, release.wait)
        await wait_until(lambda: lane.running == 1 and lane.waiting == 3)
        lane.resize(4)
        await wait_until(lambda: lane.running == 4 and lane.waiting == 0)
        assert lane.snapshot().size == 4
        release.set()
    check_invariant(lane)


async def test_resize_down_drains_without_interrupting() -> None:
    lane = Lane("run", 0, size=3, max_waiting=10)
    # Gates are handed out in the order jobs start, since task start order is
    # not guaranteed (trio shuffles it).
    gates = [threading.Event() for _ in range(4)]
    handed = iter(gates)
    lock = threading.Lock()

    def work() -> None:
        with lock:
            gate = next(handed)
        gate.wait()

    try:
        async with anyio.create_task_group() as tg:
            for _ in gates:
                tg.start_soon(lane.run_sync, work)
            await wait_until(lambda: lane.running == 3 and lane.waiting == 1)
            lane.resize(1)
            snap = lane.snapshot()
            assert snap.size == 1
            assert snap.running == 3  # over its size until it drains
            # Two finishing jobs only bring the lane down to its new size: the
            # waiter still waits.
            gates[0].set()
            gates[1].set()
            await wait_until(lambda: lane.snapshot().completed == 2)
            assert lane.running == 1
            assert lane.waiting == 1
            gates[2].set()
            await wait_until(lambda: lane.waiting == 0 and lane.running == 1)
            gates[3].set()
    finally:
        for gate in gates:
            gate.set()
    snap = lane.snapshot()
    assert (snap.completed, snap.failed, snap.running) == (4, 0, 0)


async def test_resize_rejects_sizes_below_one() -> None:
    lane = Lane("io", 2, size=1, max_waiting=1)
    with pytest.raises(ValueError, match="at least 1"):
        lane.resize(0)


@pytest.mark.parametrize(
    ("outer", "inner"),
    [
        ("run", "run"),
        ("tool", "tool"),
        ("io", "io"),
        ("tool", "run"),
        ("io", "tool"),
        ("io", "run"),
    ],
)
async def test_nested_same_or_lower_rank_raises_instead_of_deadlock(outer: str, inner: str) -> None:
    # Size 1 everywhere: a nested acquire of the same lane would hang forever.
    lanes = Lanes.create(LanesConfig(run_size=1, tool_size=1, io_size=1))

    def in_outer_thread() -> None:
        anyio.from_thread.run(lanes[inner].run_sync, lambda: None)

    with anyio.fail_after(GUARD_S), pytest.raises(LaneOrderError) as info:
        await lanes[outer].run_sync(in_outer_thread)
    assert info.value.held == outer
    assert info.value.requested == inner
    for lane in lanes:
        check_invariant(lane)
        assert lane.running == 0


async def test_nested_same_lane_in_holding_task_raises() -> None:
    lane = Lanes.create(LanesConfig(run_size=1)).run
    with anyio.fail_after(GUARD_S):
        async with lane.hold():
            with pytest.raises(LaneOrderError):
                await lane.run_sync(lambda: None)


async def test_higher_rank_nesting_is_allowed_and_context_travels() -> None:
    lanes = Lanes.create(LanesConfig(run_size=1, tool_size=1, io_size=1))
    seen: list[str | None] = []

    def io_work() -> str:
        seen.append(current_lane())
        return "io-result"

    def tool_work() -> str:
        seen.append(current_lane())
        return anyio.from_thread.run(lanes.io.run_sync, io_work)

    def run_work() -> str:
        seen.append(current_lane())
        return anyio.from_thread.run(lanes.tool.run_sync, tool_work)

    with anyio.fail_after(GUARD_S):
        assert await lanes.run.run_sync(run_work) == "io-result"
    assert seen == ["run", "tool", "io"]
    assert current_lane() is None


async def test_cancel_while_waiting_is_counted_and_frees_nothing() -> None:
    lane = Lane("run", 0, size=1, max_waiting=5)
    release = threading.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lane.run_sync, release.wait)
        await wait_until(lambda: lane.running == 1)
        try:
            with anyio.CancelScope() as scope:
                scope.cancel()
                await lane.run_sync(lambda: None)
            assert lane.snapshot().cancelled_waiting == 1
            assert lane.waiting == 0
        finally:
            release.set()
    check_invariant(lane)


async def test_positions_follow_the_queue_as_waiters_leave() -> None:
    lane = Lane("run", 0, size=1, max_waiting=10)
    keys = [f"w{i}" for i in range(5)]
    gates = {key: anyio.Event() for key in ["holder", *keys]}
    scopes: dict[str, anyio.CancelScope] = {}

    async def hold(key: str) -> None:
        with anyio.CancelScope() as scope:
            scopes[key] = scope
            async with lane.hold(ticket=key):
                await gates[key].wait()

    def positions() -> dict[str, int | None]:
        return {key: lane.position(key) for key in keys}

    with anyio.fail_after(GUARD_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold, "holder")
            await wait_until(lambda: lane.running == 1)
            for key in keys:
                tg.start_soon(hold, key)
                await wait_until(lambda key=key: lane.position(key) is not None)
            assert positions() == {"w0": 1, "w1": 2, "w2": 3, "w3": 4, "w4": 5}

            scopes["w2"].cancel()  # leaves from the middle
            await wait_until(lambda: lane.waiting == 4)
            assert positions() == {"w0": 1, "w1": 2, "w2": None, "w3": 3, "w4": 4}

            gates["holder"].set()  # w0 leaves from the head with the token
            await wait_until(lambda: lane.waiting == 3)
            assert positions() == {"w0": None, "w1": 1, "w2": None, "w3": 2, "w4": 3}
            assert lane.snapshot().cancelled_waiting == 1
            for gate in gates.values():
                gate.set()
    check_invariant(lane)


async def test_cancel_while_running_keeps_token_until_thread_ends() -> None:
    lane = Lane("run", 0, size=1, max_waiting=5)
    entered = threading.Event()
    release = threading.Event()
    thread_done = threading.Event()

    def work() -> None:
        entered.set()
        release.wait()
        thread_done.set()

    scope = anyio.CancelScope()

    async def call() -> None:
        with scope:
            await lane.run_sync(work)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        try:
            await wait_until(entered.is_set)
            scope.cancel()
            # The cancelled call still holds its token: its thread runs on.
            await anyio.sleep(0.05)
            assert lane.running == 1
            assert not thread_done.is_set()
        finally:
            release.set()
    assert thread_done.is_set()
    snap = lane.snapshot()
    # The thread finished its work, so the call counts as completed; the
    # cancellation lands at the next checkpoint after the token is back.
    assert (snap.admitted, snap.completed, snap.failed, snap.running) == (1, 1, 0, 0)


async def test_threads_never_exceed_lane_size() -> None:
    lane = Lane("tool", 1, size=3, max_waiting=100)
    active = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        threading.Event().wait(0.002)
        with lock:
            active -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(30):
            tg.start_soon(lane.run_sync, work)
    assert 1 <= peak <= 3


OPS = st.lists(
    st.sampled_from(["ok", "fail", "cancel_waiting", "cancel_running"]), min_size=1, max_size=12
)


@settings(max_examples=25, deadline=None)
@given(ops=OPS, size=st.integers(min_value=1, max_value=3))
async def test_token_accounting_under_random_interleavings(ops: list[str], size: int) -> None:
    lane = Lane("run", 0, size=size, max_waiting=100)
    blocker = threading.Event()

    def fail() -> None:
        raise RuntimeError("agent failed")

    async def call(op: str) -> None:
        with anyio.CancelScope() as scope:
            if op == "cancel_waiting":
                scope.cancel()
            try:
                if op == "fail":
                    await lane.run_sync(fail)
                elif op == "cancel_running":
                    await lane.run_sync(blocker.wait, 0.001)
                else:
                    await lane.run_sync(lambda: None)
            except RuntimeError:
                pass

    with anyio.fail_after(GUARD_S):
        async with anyio.create_task_group() as tg:
            for op in ops:
                tg.start_soon(call, op)
            await anyio.lowlevel.checkpoint()
            tg.cancel_scope.deadline = anyio.current_time() + 0.05
    snap = lane.snapshot()
    assert snap.running == 0
    assert snap.waiting == 0
    assert snap.admitted == snap.completed + snap.failed
    assert snap.admitted + snap.cancelled_waiting == len(ops)
    assert snap.wait_time.count == snap.admitted
    assert snap.service_time.count == snap.admitted
