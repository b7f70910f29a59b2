"""A full disk, for real: the database on a small tmpfs that the test fills.

Runs whose writes fail end in error, shown at once and stored once the disk
has room again; writes are refused with StoreUnavailable meanwhile; and the
store goes on without a restart, intact, with nothing acknowledged lost.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from laneway.errors import StoreUnavailable
from laneway.models import EventFilter
from tests.services import (
    GUARD_S,
    all_events,
    gate_spec,
    gated_run,
    open_service,
    statuses,
    wait_idle_lane,
    wait_status,
)
from tests.smalldisk import SmallDisk, small_disk

pytestmark = pytest.mark.anyio


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path) as mounted:
        yield mounted


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        (result,) = conn.execute("PRAGMA integrity_check").fetchone()
    return str(result)


async def wait_writable(service: object) -> None:
    with anyio.fail_after(GUARD_S):
        while service.store_problem() is not None:  # type: ignore[attr-defined]
            await anyio.sleep(0.05)


async def test_a_run_whose_writes_fail_ends_in_error_now_and_in_the_store_later(
    disk: SmallDisk,
) -> None:
    db = disk.root / "x.db"
    async with open_service(str(db), run_size=1) as service:
        kept = await service.create(initial_message="before the disk filled")
        await wait_status(service, kept.id, "finished")
        async with gated_run(service) as a:
            disk.fill()
        # The step returned and its writes found no room: the run ends, and
        # reads show why at once, although the store still says "running".
        await wait_idle_lane(service)
        shown = await service.get(a.id)
        assert shown.status == "error"
        assert shown.last_error is not None
        assert "full" in shown.last_error
        assert service.store_problem() is not None
        with pytest.raises(StoreUnavailable):
            await service.send_message(a.id, "while full", run=False)
        with pytest.raises(StoreUnavailable):
            await service.create(initial_message="while full")
        disk.free()
        # Without a restart: the owed status lands, and the store takes writes.
        await wait_writable(service)
        with anyio.fail_after(GUARD_S):
            while "error" not in statuses(await all_events(service, a.id)):
                await anyio.sleep(0.05)
        events = await all_events(service, a.id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert [e.kind for e in events][-2:] == ["error", "status"]
        assert events[-2].data["type"] == "StoreUnavailable"
        # The conversation can run again, and nothing acknowledged was lost.
        await service.send_message(a.id, "after", run=True)
        await wait_status(service, a.id, "finished")
        user = EventFilter(kind="message", source="user")
        page, _ = await service.search_events(a.id, user)
        texts = [e.data["text"] for e in page]
        assert texts == ["a", "after"]
        assert (await service.get(kept.id)).status == "finished"
    assert integrity(db) == "ok"


async def test_the_store_probes_its_way_back_when_nothing_is_owed(disk: SmallDisk) -> None:
    async with open_service(str(disk.root / "x.db")) as service:
        conv = await service.create()
        disk.fill()
        with pytest.raises(StoreUnavailable) as refused:
            await service.send_message(conv.id, "x" * 100_000, run=False)
        assert "full" in str(refused.value)
        assert service.store_problem() is not None
        disk.free()
        await wait_writable(service)
        await service.send_message(conv.id, "now it fits", run=False)
        assert await service.count_events(conv.id, EventFilter(kind="message")) == 1


async def test_a_status_the_loop_owes_is_owed_too(disk: SmallDisk) -> None:
    async with open_service(str(disk.root / "x.db"), run_size=1) as service:
        async with gated_run(service):
            spec, gate = gate_spec()
            queued = await service.create(agent=spec, initial_message="waits")
            await wait_status(service, queued.id, "queued")
            disk.fill()
            # Paused while queued: its status cannot be written, and is owed.
            assert (await service.pause(queued.id)).status == "paused"
            gate.set()
            # The running run's end cannot be written either.
        disk.free()
        await wait_writable(service)
        with anyio.fail_after(GUARD_S):
            while statuses(await all_events(service, queued.id))[-1] != "paused":
                await anyio.sleep(0.05)
        assert (await service.get(queued.id)).status == "paused"
