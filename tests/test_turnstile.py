"""The turnstile: numbered callers pass in number order, and a number released
on any path, passing or not, lets the later ones through."""

from __future__ import annotations

import anyio
import pytest

from laneway.turnstile import Turnstile

pytestmark = pytest.mark.anyio

GUARD_S = 5


async def pass_in_turn(turnstile: Turnstile, number: int, passed: list[int]) -> None:
    with turnstile.held(number):
        await turnstile.wait_turn(number)
        passed.append(number)


async def test_numbers_pass_in_their_order_whatever_order_they_arrive_in() -> None:
    turnstile = Turnstile(after=41)
    numbers = [turnstile.take() for _ in range(5)]
    assert numbers == [42, 43, 44, 45, 46]
    passed: list[int] = []
    with anyio.fail_after(GUARD_S):
        async with anyio.create_task_group() as tg:
            for number in reversed(numbers[1:]):
                tg.start_soon(pass_in_turn, turnstile, number, passed)
                await anyio.wait_all_tasks_blocked()  # each waits before the next comes
            assert passed == []
            tg.start_soon(pass_in_turn, turnstile, numbers[0], passed)
    assert passed == numbers
    assert turnstile.pending == 0


async def test_the_first_number_passes_at_once() -> None:
    turnstile = Turnstile()
    number = turnstile.take()
    with anyio.fail_after(GUARD_S):
        await turnstile.wait_turn(number)


@pytest.mark.parametrize("gives_up", ["without waiting", "cancelled while waiting"])
async def test_a_number_given_up_before_its_turn_lets_the_later_ones_through(
    gives_up: str,
) -> None:
    # As a run whose "queued" write fails, or whose wait is cancelled.
    turnstile = Turnstile()
    first, second, third = (turnstile.take() for _ in range(3))
    passed: list[int] = []
    with anyio.fail_after(GUARD_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pass_in_turn, turnstile, third, passed)
            if gives_up == "without waiting":
                turnstile.release(second)
            else:
                async with anyio.create_task_group() as waiting:
                    waiting.start_soon(pass_in_turn, turnstile, second, passed)
                    await anyio.wait_all_tasks_blocked()
                    waiting.cancel_scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert passed == []
            turnstile.release(first)  # its turn came, and it never waited
    assert passed == [third]
    assert turnstile.pending == 0


async def test_a_waiter_that_fails_after_its_turn_lets_the_later_ones_through() -> None:
    turnstile = Turnstile()
    first, second = turnstile.take(), turnstile.take()
    passed: list[int] = []

    async def refused() -> None:
        with turnstile.held(first):
            await turnstile.wait_turn(first)
            raise LookupError("the queue is full")

    with anyio.fail_after(GUARD_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pass_in_turn, turnstile, second, passed)
            with pytest.raises(LookupError):
                await refused()
    assert passed == [second]


async def test_a_released_number_cannot_wait_and_releasing_again_does_nothing() -> None:
    turnstile = Turnstile()
    first, second = turnstile.take(), turnstile.take()
    turnstile.release(first)
    turnstile.release(first)
    with pytest.raises(ValueError, match="released"):
        await turnstile.wait_turn(first)
    with pytest.raises(ValueError, match="not taken"):
        await turnstile.wait_turn(second + 1)
    assert turnstile.pending == 1
    with anyio.fail_after(GUARD_S):
        await turnstile.wait_turn(second)
