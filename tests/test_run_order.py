"""Runs enter the run lane in the order they were reserved, the order stored
with their "queued" statuses; a run that gives up, however, lets the runs
reserved after it in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from laneway.errors import RunNotAdmitted, StoreUnavailable
from laneway.service import ConversationService
from tests.services import all_events, gated_run, open_service, statuses, wait_status

pytestmark = pytest.mark.anyio


def hold_first_write(
    monkeypatch: pytest.MonkeyPatch, target: object, name: str, error: Exception | None
) -> tuple[anyio.Event, anyio.Event]:
    """Hold the first call of ``target.name`` (a write) until released, then
    make it raise ``error``, if any; the calls after it go through."""
    write = getattr(target, name)
    reached, release = anyio.Event(), anyio.Event()

    async def held(*args: Any, **kwargs: Any) -> Any:
        if not reached.is_set():
            reached.set()
            await release.wait()
            if error is not None:
                raise error
        return await write(*args, **kwargs)

    monkeypatch.setattr(target, name, held)
    return reached, release


async def positions(service: ConversationService, cids: list[str]) -> list[int | None]:
    return [(await service.get(cid)).queue_position for cid in cids]


async def send(service: ConversationService, cid: str) -> None:
    await service.send_message(cid, "go")


@pytest.mark.parametrize(
    ("first", "fate"),
    [
        ("message", "slow"),  # its write only takes longer than the others'
        ("message", "cancelled"),  # its client goes away as it writes
        ("message", "fails"),  # the store refuses its write
        ("create", "fails"),
    ],
)
async def test_runs_reserved_after_one_still_writing_enter_the_lane_after_it(
    monkeypatch: pytest.MonkeyPatch, first: str, fate: str
) -> None:
    async with open_service(run_size=1) as service, gated_run(service):
        cids = [(await service.create()).id for _ in range(3)]
        error = StoreUnavailable("the disk is full") if fate == "fails" else None
        target, name = (service.runs, "_append") if first == "message" else (service, "_store_new")
        reached, release = hold_first_write(monkeypatch, target, name, error)
        failed: list[Exception] = []
        client = anyio.CancelScope()

        async def admit_first(admit: Callable[[], Awaitable[object]]) -> None:
            with client:
                try:
                    await admit()
                except StoreUnavailable as exc:
                    failed.append(exc)

        async with anyio.create_task_group() as tg:
            if first == "message":
                tg.start_soon(admit_first, lambda: send(service, cids[0]))
            else:
                tg.start_soon(admit_first, lambda: service.create(initial_message="a"))
            await reached.wait()
            for cid in cids[1:]:
                tg.start_soon(send, service, cid)
                await wait_status(service, cid, "queued")
            # Stored "queued", and waiting for the one reserved before them.
            assert await positions(service, cids[1:]) == [None, None]
            if fate == "cancelled":
                client.cancel()
            release.set()
        if fate == "fails":
            assert len(failed) == 1
            assert await positions(service, cids[1:]) == [1, 2]
        else:
            assert await positions(service, cids) == [1, 2, 3]


async def test_a_run_the_full_queue_refuses_lets_the_runs_after_it_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_service(run_size=1, run_max_waiting=1) as service, gated_run(service):
        first, refused = [(await service.create()).id for _ in range(2)]
        reached, release = hold_first_write(monkeypatch, service.runs, "_append", None)
        outcome: list[RunNotAdmitted] = []

        async def send_refused() -> None:
            with pytest.raises(RunNotAdmitted) as exc:
                await send(service, refused)
            outcome.append(exc.value)

        async with anyio.create_task_group() as tg:
            tg.start_soon(send, service, first)
            await reached.wait()
            # Both were admitted while the queue was empty; the first takes its place.
            tg.start_soon(send_refused)
            await wait_status(service, refused, "queued")
            release.set()
        assert len(outcome) == 1
        assert (await service.get(refused)).status == "idle"
        await service.pause(first)
        # Had the refused run kept its place in the order, this would wait forever.
        later = await service.create(initial_message="later")
        assert later.queue_position == 1


async def test_runs_waiting_for_their_turn_when_shutdown_begins_are_paused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_service(run_size=1) as service:
        async with gated_run(service):
            cids = [(await service.create()).id for _ in range(2)]
            reached, release = hold_first_write(monkeypatch, service.runs, "_append", None)
            async with anyio.create_task_group() as tg:
                tg.start_soon(send, service, cids[0])
                await reached.wait()
                tg.start_soon(send, service, cids[1])
                await wait_status(service, cids[1], "queued")
                service.runs.begin_shutdown()
                release.set()
        await service.runs.shut_down()
        for cid in cids:
            assert statuses(await all_events(service, cid))[-2:] == ["queued", "paused"]
