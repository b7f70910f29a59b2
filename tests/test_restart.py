"""What a service makes, as it starts, of the runs a stopped process left: those
left running are paused, those left queued are queued again in their order,
and the lanes, pauses and shutdown treat them as any queued run."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from laneway.lanes import SHARED_POOL_SIZE, LaneFull
from laneway.models import AgentSpec, ConversationRecord, NewEvent, status_event, utc_now
from laneway.restart import NOT_REQUEUED_REASON, REQUEUE_REASON, RESTART_REASON
from laneway.service import ConversationService
from laneway.store import SQLiteEventStore
from laneway.store.base import Recovery
from tests.lanes_held import lane_held
from tests.services import all_events, gate_spec, open_service, statuses, wait_status
from tests.test_store_recovery import recover

pytestmark = pytest.mark.anyio


async def positions(service: ConversationService, cids: Sequence[str]) -> list[int | None]:
    return [(await service.get(cid)).queue_position for cid in cids]


async def answers(service: ConversationService, cid: str) -> list[str]:
    return [e.data["text"] for e in await all_events(service, cid) if e.source == "agent"]


def left_queued(db: str, agents: Sequence[AgentSpec]) -> list[str]:
    """Conversations queued in this order, as a process killed before it ran
    them leaves them: each created queued with its message, in one write."""
    store = SQLiteEventStore(db)
    try:
        cids = []
        for n, agent in enumerate(agents):
            now = utc_now()
            cid = uuid.uuid4().hex
            record = ConversationRecord(cid, "", "queued", agent, 10, now, now, queue_order=n + 1)
            message = NewEvent("message", "user", {"text": f"m{n}"})
            store.create_conversation(record, [status_event("idle", "created"), message])
            cids.append(cid)
        return cids
    finally:
        store.close()


async def test_runs_left_queued_are_queued_again_in_their_order_and_finish(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "laneway.db")
    blocker, blocker_gate = gate_spec()
    first, first_gate = gate_spec()
    try:
        async with open_service(
            db, run_size=1, io_size=1, io_max_waiting=0, shutdown_grace_s=0.1
        ) as service:
            a = await service.create(agent=blocker, initial_message="a")
            await wait_status(service, a.id, "running")
            # Queued in another order than they were created in.
            idle = [(await service.create(title=str(n))).id for n in range(4)]
            head = await service.create(agent=first, initial_message="head")
            order = [head.id, idle[2], idle[0], idle[3], idle[1]]
            for cid in order[1:]:
                await service.send_message(cid, f"to {cid}")
            assert await positions(service, order) == [1, 2, 3, 4, 5]
            # A shutdown that cannot write leaves the store as a kill would:
            # the run "running", the queue "queued".
            async with lane_held(service.lanes.io):
                await service.runs.shut_down()
        blocker_gate.set()
        async with open_service(db, run_size=1) as service:
            assert (await service.get(a.id)).status == "paused"
            last = (await all_events(service, a.id))[-1]
            assert last.data == {"status": "paused", "reason": RESTART_REASON}
            # The head of the old queue has the token; the rest wait in their order.
            await wait_status(service, head.id, "running")
            assert await positions(service, order[1:]) == [1, 2, 3, 4]
            assert service.lanes.run.snapshot().rejected == 0
            for cid in order[1:]:
                events = await all_events(service, cid)
                assert [e.data for e in events if e.kind == "status"][-2:] == [
                    {"status": "queued"},
                    {"status": "queued", "reason": REQUEUE_REASON},
                ]
            first_gate.set()
            for cid in order:
                await wait_status(service, cid, "finished")
            for cid in order[1:]:
                assert await answers(service, cid) == [f"to {cid}"]
                statuses_seen = statuses(await all_events(service, cid))
                assert statuses_seen == ["idle", "queued", "queued", "running", "finished"]
    finally:
        blocker_gate.set()
        first_gate.set()


async def test_past_a_smaller_run_queue_the_newest_are_paused_and_new_runs_refused(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "laneway.db")
    spec, gate = gate_spec()
    cids = left_queued(db, [spec] * 5)
    try:
        # Room for three: one token, two places in the queue.
        async with open_service(db, run_size=1, run_max_waiting=2) as service:
            await wait_status(service, cids[0], "running")
            assert await positions(service, cids) == [None, 1, 2, None, None]
            for cid in cids[3:]:
                view = await service.get(cid)
                assert view.status == "paused"
                last = (await all_events(service, cid))[-1]
                assert last.data == {"status": "paused", "reason": NOT_REQUEUED_REASON}
            assert service.lanes.run.snapshot().rejected == 0
            # The bound holds for runs asked for now.
            with pytest.raises(LaneFull):
                await service.run(cids[3])
            gate.set()
            for cid in cids[:3]:
                await wait_status(service, cid, "finished")
            # A run paused at the restart runs when asked, and reads its message.
            await service.run(cids[3])
            await wait_status(service, cids[3], "finished")
            assert await answers(service, cids[3]) == ["m3"]
    finally:
        gate.set()


async def test_a_requeued_run_pauses_out_of_the_queue_and_shutdown_pauses_the_rest(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "laneway.db")
    spec, gate = gate_spec()
    cids = left_queued(db, [spec] * 4)
    try:
        async with open_service(db, run_size=1, shutdown_grace_s=0.1) as service:
            await wait_status(service, cids[0], "running")
            paused = await service.pause(cids[1])
            assert (paused.status, paused.queue_position) == ("paused", None)
            assert await positions(service, cids[2:]) == [1, 2]
            assert statuses(await all_events(service, cids[1]))[-2:] == ["queued", "paused"]
        gate.set()
        store = SQLiteEventStore(db)
        try:
            # Nothing is left for the next start to settle: the queue left paused.
            assert recover(store) == Recovery(paused=[], requeued=[], not_requeued=[])
            for cid in cids[2:]:
                last = store.events_after(cid, 0, 100)[-1]
                assert last.data == {"status": "paused", "reason": "paused while queued"}
        finally:
            store.close()
    finally:
        gate.set()


async def test_in_shared_mode_the_room_is_the_whole_pool(tmp_path: Path) -> None:
    db = str(tmp_path / "laneway.db")
    cids = left_queued(db, [AgentSpec()] * (SHARED_POOL_SIZE + 1))
    # The io call that settles the store holds a token of the pool the run lane
    # draws on; the room is counted before it, when every token is free.
    async with open_service(db, mode="shared", run_max_waiting=0) as service:
        for n, cid in enumerate(cids[:-1]):
            await wait_status(service, cid, "finished")
            assert await answers(service, cid) == [f"m{n}"]
        last = (await all_events(service, cids[-1]))[-1]
        assert last.data == {"status": "paused", "reason": NOT_REQUEUED_REASON}
        assert service.lanes.run.snapshot().rejected == 0


async def test_runs_admitted_at_once_are_queued_again_in_the_order_the_queue_held_them(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "laneway.db")
    blocker_spec, blocker_gate = gate_spec()
    spec, gate = gate_spec()
    count = 60  # admissions of each kind: a new conversation, a message to an idle one
    lanes = {"run_size": 1, "run_max_waiting": 4 * count, "io_max_waiting": 4 * count}
    try:
        async with open_service(db, **lanes, shutdown_grace_s=0.1) as service:
            blocker = await service.create(agent=blocker_spec, initial_message="a")
            await wait_status(service, blocker.id, "running")
            idle = [(await service.create(agent=spec)).id for _ in range(count)]
            created: list[str] = []

            async def create(n: int) -> None:
                created.append((await service.create(agent=spec, initial_message=f"c{n}")).id)

            # Admitted at once, their "queued" writes commit together, and come
            # back to the loop in an order of their own.
            async with anyio.create_task_group() as tg:
                for n, cid in enumerate(idle):
                    tg.start_soon(create, n)
                    tg.start_soon(service.send_message, cid, f"m{n}")
            cids = [*idle, *created]
            place = dict(zip(cids, await positions(service, cids), strict=True))
            held = sorted(cids, key=lambda cid: place[cid] or 0)
            assert [place[cid] for cid in held] == list(range(1, 2 * count + 1))
            # A shutdown that cannot write leaves them queued, as a kill would.
            service.lanes.io.resize(1)
            service.lanes.io.max_waiting = 0
            async with lane_held(service.lanes.io):
                await service.runs.shut_down()
        # Its thread, left behind, ends while the loop can still answer it.
        blocker_gate.set()
        async with open_service(db, **lanes) as service:
            # The head of the old queue has the token, the rest their old places.
            after = await positions(service, held)
            out_of_place = sum(p != n for n, p in enumerate(after[1:], 1))
            assert out_of_place == 0, f"{out_of_place} of {len(after) - 1} requeued out of place"
            assert after[0] is None
            await wait_status(service, held[0], "running")
            gate.set()  # the run ends, and the rest are paused
    finally:
        blocker_gate.set()
        gate.set()
