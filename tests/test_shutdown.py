"""Shutdown: no run is admitted once it begins, runs are asked to pause the
moment it begins, and it is over by the end of the grace period, whatever holds
the io lane or the connections; every run left behind is paused in the store."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from laneway.errors import ShuttingDown
from laneway.models import AgentSpec, EventFilter
from laneway.store import SQLiteEventStore
from tests import agents
from tests.lanes_held import lane_held
from tests.serverproc import ServerProcess, running_server
from tests.services import GUARD_S, gate_spec, open_service, wait_idle_lane
from tests.services import wait_status as wait_service_status
from tests.test_e2e import C, wait_status
from tests.test_store_recovery import recover

pytestmark = pytest.mark.anyio


async def test_drain_asks_runs_to_pause_at_once(tmp_path: Path) -> None:
    async with open_service(str(tmp_path / "x.db"), run_size=1, shutdown_grace_s=60) as service:
        spec = AgentSpec("sim", {"steps": 100_000, "think_ms": 5})
        running = await service.create(agent=spec, initial_message="go", max_steps=100_000)
        queued = await service.create(agent=spec, initial_message="wait")
        await wait_service_status(service, running.id, "running")
        await wait_service_status(service, queued.id, "queued")
        # What the server does on a signal, before it waits for connections.
        service.drain()
        # Long before the grace period ends, the run has paused and the queue is empty.
        await wait_service_status(service, running.id, "paused")
        await wait_service_status(service, queued.id, "paused")
        await wait_idle_lane(service)


async def test_pausing_the_queue_fits_in_the_grace_even_with_the_io_lane_full(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "x.db")
    spec, gate = gate_spec()
    try:
        async with open_service(
            db, run_size=1, io_size=1, io_max_waiting=0, shutdown_grace_s=0.3
        ) as service:
            a = await service.create(agent=spec, initial_message="a")
            # In its step, so "running" is stored: the view says "running" as
            # soon as the run has its token, before its thread has written it.
            entered = agents.gate(spec.config["gate"] + ":entered")
            await anyio.to_thread.run_sync(entered.wait, GUARD_S)
            b = await service.create(initial_message="b")
            await wait_service_status(service, b.id, "queued")
            async with lane_held(service.lanes.io):
                # The queued run's pause cannot get an io token: shutdown must
                # still end with its grace period, not wait for the lane.
                with anyio.fail_after(GUARD_S):
                    await service.runs.shut_down()
    finally:
        gate.set()
    store = SQLiteEventStore(db)
    try:
        # What could not be written is left to the restart: the run left behind
        # is paused, the one still queued is queued again.
        recovery = recover(store)
        assert (recovery.paused, [r.id for r in recovery.requeued]) == ([a.id], [b.id])
    finally:
        store.close()


async def test_no_run_is_admitted_once_shutdown_begins() -> None:
    async with open_service() as service:
        idle = await service.create()
        service.runs.stop_admitting()
        with pytest.raises(ShuttingDown):
            await service.run(idle.id)
        # Refused before anything is stored: the caller never learns the id of a
        # conversation created for a run that was refused.
        with pytest.raises(ShuttingDown):
            await service.create(initial_message="refused")
        assert await service.count_conversations() == 1
        assert (await service.get(idle.id)).status == "idle"
        # Without a run, creating still works.
        assert (await service.create(title="later")).status == "idle"
        # A message is kept even when its run is refused.
        with pytest.raises(ShuttingDown):
            await service.send_message(idle.id, "kept", run=True)
        [kept], _ = await service.search_events(idle.id, EventFilter(kind="message"))
        assert kept.data == {"text": "kept"}
        assert (await service.get(idle.id)).status == "idle"


async def test_close_pauses_runs_and_leaves_store_consistent(tmp_path: Path) -> None:
    db = str(tmp_path / "laneway.db")
    spec, gate = gate_spec()
    try:
        async with open_service(db, run_size=1, shutdown_grace_s=0.2) as service:
            a = await service.create(agent=spec, initial_message="a")
            # In its step, so "running" is stored: the view says "running" as
            # soon as the run has its token, before its thread has written it.
            entered = agents.gate(spec.config["gate"] + ":entered")
            await anyio.to_thread.run_sync(entered.wait, GUARD_S)
            b = await service.create(initial_message="b")
            long_run = await service.create(
                agent=AgentSpec("sim", {"steps": 10_000, "think_ms": 1})
            )
            del long_run
    finally:
        gate.set()
    store = SQLiteEventStore(db)
    try:
        assert store.get_conversation(a.id).status == "paused"  # type: ignore[union-attr]
        assert store.get_conversation(b.id).status == "paused"  # type: ignore[union-attr]
        assert store.count_by_status()["running"] == 0
        assert store.count_by_status()["queued"] == 0
    finally:
        store.close()


async def test_close_pauses_a_run_queue_longer_than_the_io_queue(tmp_path: Path) -> None:
    # One io call per queued run would overflow this io lane (1 running, 1
    # waiting) and leave conversations "queued" in the store.
    db = str(tmp_path / "laneway.db")
    spec, gate = gate_spec()
    try:
        async with open_service(
            db, run_size=1, io_size=1, io_max_waiting=1, shutdown_grace_s=0.2
        ) as service:
            a = await service.create(agent=spec, initial_message="a")
            await wait_service_status(service, a.id, "running")
            queued = [(await service.create(initial_message=f"q{i}")).id for i in range(6)]
            assert service.lanes.run.waiting == 6
    finally:
        gate.set()
    store = SQLiteEventStore(db)
    try:
        for cid in queued:
            record = store.get_conversation(cid)
            assert record is not None
            assert record.status == "paused"
            last = store.get_event(cid, record.last_seq)
            assert last is not None
            assert last.data == {"status": "paused", "reason": "paused while queued"}
        assert store.count_by_status()["queued"] == 0
    finally:
        store.close()


async def test_shutdown_leaves_behind_the_step_of_a_deleted_conversation(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "laneway.db")
    (spec, gate), (other_spec, other_gate) = gate_spec(), gate_spec()
    try:
        async with open_service(db, shutdown_grace_s=0.05) as service:
            gone = await service.create(agent=spec, initial_message="a")
            kept = await service.create(agent=other_spec, initial_message="b")
            for conv in (gone, kept):
                await wait_service_status(service, conv.id, "running")
            await anyio.to_thread.run_sync(
                agents.gate(spec.config["gate"] + ":entered").wait, GUARD_S
            )
            await service.delete(gone.id)
            assert gone.id in service.runs.handles  # its step has not returned
        # Closed cleanly: the deleted conversation needed no "paused", the other got one.
    finally:
        gate.set()
        other_gate.set()
    store = SQLiteEventStore(db)
    try:
        assert store.get_conversation(gone.id) is None
        record = store.get_conversation(kept.id)
        assert record is not None
        assert record.status == "paused"
    finally:
        store.close()


def sim_body(**config: Any) -> dict[str, Any]:
    return {
        "agent": {"kind": "sim", "config": config},
        "initial_message": "go",
        "max_steps": 100_000,
    }


async def signal_while_followed(
    client: httpx.AsyncClient, server: ServerProcess, cid: str, sig: signal.Signals
) -> float:
    """Send ``sig`` while an httpx SSE client follows ``cid`` on a keep-alive
    connection; return the seconds until the process has exited."""
    lines: list[str] = []

    async def follow() -> None:
        try:
            async with client.stream("GET", f"{C}/{cid}/events/stream") as response:
                async for line in response.aiter_lines():
                    lines.append(line)
        except httpx.TransportError:
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        with anyio.fail_after(GUARD_S):
            while not lines:
                await anyio.sleep(0.01)
        started = time.monotonic()
        server.proc.send_signal(sig)
        await anyio.to_thread.run_sync(server.proc.wait, GUARD_S)
    return time.monotonic() - started


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_with_a_follower_connected_pauses_runs_at_once(
    anyio_backend: str, tmp_path: Path, sig: signal.Signals
) -> None:
    db = str(tmp_path / "x.db")
    grace = 30.0
    args = ["--db", db, "--shutdown-grace-s", str(grace), "--run-lane-size", "1"]
    with running_server(anyio_backend, args) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            conv = (await client.post(C, json=sim_body(steps=100_000, think_ms=20))).json()
            waiting = (await client.post(C, json=sim_body(steps=2))).json()
            await wait_status(client, conv["id"], "running")
            before = (await client.get(f"{C}/{conv['id']}")).json()["steps_done"]
            took = await signal_while_followed(client, server, conv["id"], sig)
    assert server.proc.returncode == 0
    # Long before the grace period of 30 s: the run paused at its next step.
    assert took < grace / 2
    with running_server(anyio_backend, ["--db", db]) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            after = (await client.get(f"{C}/{conv['id']}")).json()
            queued = (await client.get(f"{C}/{waiting['id']}")).json()
    assert after["status"] == "paused"
    # A step or two more, not the hundreds the grace period would have allowed.
    assert after["steps_done"] - before <= 5
    # The queued run never started.
    assert (queued["status"], queued["steps_done"]) == ("paused", 0)


async def test_a_step_longer_than_the_grace_is_left_at_its_end_with_a_follower(
    anyio_backend: str, tmp_path: Path
) -> None:
    db = str(tmp_path / "x.db")
    grace = 3.0
    with running_server(anyio_backend, ["--db", db, "--shutdown-grace-s", str(grace)]) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            body = sim_body(steps=10, think_ms=120_000)
            conv = (await client.post(C, json=body)).json()
            await wait_status(client, conv["id"], "running")
            took = await signal_while_followed(client, server, conv["id"], signal.SIGTERM)
    assert server.proc.returncode == 0
    # The grace period once, not twice (hypercorn first waited it out for the
    # follower's connection, then the app waited it again for the run).
    assert grace <= took < 2 * grace
    with running_server(anyio_backend, ["--db", db]) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            after = (await client.get(f"{C}/{conv['id']}")).json()
    assert after["status"] == "paused"
