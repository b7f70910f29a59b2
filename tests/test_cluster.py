"""Several instances on one PostgreSQL database, in one process: the shared run
queue and its bound, roles, leases and what happens to the runs of an owner
that is lost, and controls that reach a run held by another instance."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest
from anyio.abc import TaskStatus

from laneway import waiting
from laneway.cluster import leases
from laneway.cluster.leases import OWNER_LOST, OWNER_LOST_IN_TOOLS
from laneway.cluster.member import in_transaction
from laneway.cluster.queue import enqueue
from laneway.cluster.service import SharedConversationService
from laneway.deltas import Delta
from laneway.errors import RunNotAdmitted
from laneway.lifecycle import INTERRUPT_REASON, PAUSE_REASON
from laneway.models import (
    AgentSpec,
    ConversationRecord,
    ConversationUpdate,
    Event,
    EventFilter,
    NewEvent,
    status_event,
    utc_now,
)
from laneway.store.base import LeaseLost
from laneway.store.postgres import PostgresEventStore
from tests.cluster import instance, sim, sql
from tests.services import GUARD_S, all_events, gate_spec, gated_run, statuses, wait_status

pytestmark = pytest.mark.anyio


async def test_runs_queue_in_admission_order_and_every_instance_tells_the_same_place(
    anyio_backend: str, pg_url: str
) -> None:
    async with (
        instance(pg_url, "all", run_size=1) as worker,
        instance(pg_url, "api") as api,
        gated_run(api),
    ):
        queued = [await api.create(agent=sim(steps=1), initial_message="go") for _ in range(3)]
        for place, conv in enumerate(queued, 1):
            assert (await api.get(conv.id)).queue_position == place
            assert (await worker.get(conv.id)).queue_position == place
        listed, _ = await worker.list_conversations(status="queued")
        assert {c.id: c.queue_position for c in listed} == {
            c.id: i for i, c in enumerate(queued, 1)
        }
    async with instance(pg_url, "worker", run_size=1) as worker:
        for conv in queued:
            await wait_status(worker, conv.id, "finished")
        began = [
            next(
                e.timestamp
                for e in await all_events(worker, c.id)
                if e.data.get("status") == "running"
            )
            for c in queued
        ]
    assert began == sorted(began)


async def test_the_run_queue_bound_holds_across_instances(anyio_backend: str, pg_url: str) -> None:
    async with (
        instance(pg_url, "all", run_size=1, run_max_waiting=2) as one,
        instance(pg_url, "api", run_max_waiting=2) as two,
        gated_run(one),
    ):
        await one.create(initial_message="a")
        await two.create(initial_message="b")
        with pytest.raises(RunNotAdmitted) as refused:
            await two.create(initial_message="c")
        kept = refused.value.conversation
        assert kept is not None
        assert kept.status == "idle"
        idle = await one.create()
        with pytest.raises(RunNotAdmitted) as again:
            await one.send_message(idle.id, "d")
        assert again.value.event is not None
        assert again.value.event.data == {"text": "d"}


async def test_an_api_instance_takes_no_runs_and_a_worker_takes_them(
    anyio_backend: str, pg_url: str
) -> None:
    async with instance(pg_url, "api") as api:
        conv = await api.create(agent=sim(steps=2), initial_message="go")
        # Several heartbeats: nothing here takes the run.
        await anyio.sleep(0.5)
        assert (await api.get(conv.id)).status == "queued"
        assert not api.runs.handles
        async with instance(pg_url, "worker") as worker:
            await wait_status(api, conv.id, "finished")
            assert not api.runs.handles
            instances = await api.instances()
            assert {i.role for i in instances} == {"api", "worker"}
            assert {i.id for i in instances} == {api.member.id, worker.member.id}


def test_a_write_under_a_stale_lease_is_refused(pg_url: str) -> None:
    store = PostgresEventStore(pg_url)
    try:
        now = utc_now()
        record = ConversationRecord("c", "", "idle", AgentSpec(), 5, now, now)
        store.create_conversation(record)
        in_transaction(store, enqueue, "c", (), max_waiting=10, by="x")
        [(_, first)] = in_transaction(store, leases.claim, "x", 60.0, 5)
        running = ConversationUpdate(status="running")
        store.append_fenced("c", [status_event("running")], running, lease=first.key())
        sql(pg_url, "UPDATE conversations SET lease_expires = now() - interval '1 s'")
        settled = in_transaction(store, leases.settle_expired, by="y")
        assert [r.conversation_id for r in settled.requeued] == ["c"]
        [(_, second)] = in_transaction(store, leases.claim, "y", 60.0, 5)
        assert second.fence == first.fence + 1
        before = store.count_events("c", EventFilter())
        with pytest.raises(LeaseLost):
            store.append_fenced(
                "c", [NewEvent("message", "agent", {"text": "late"})], None, lease=first.key()
            )
        store.append_fenced(
            "c", [NewEvent("message", "agent", {"text": "ok"})], None, lease=second.key()
        )
        assert store.count_events("c", EventFilter()) == before + 1
    finally:
        store.close()


async def test_runs_of_a_lost_owner_go_on_or_pause_as_their_last_step_allows(
    anyio_backend: str, pg_url: str
) -> None:
    store = PostgresEventStore(pg_url)
    try:
        now = utc_now()
        clean, tools = (
            ConversationRecord(name, "", "idle", AgentSpec("sim", {"steps": 2}), 5, now, now)
            for name in ("clean", "tools")
        )
        store.create_conversation(clean, [NewEvent("message", "user", {"text": "go"})])
        store.create_conversation(tools, [NewEvent("message", "user", {"text": "go"})])
        call = NewEvent("tool_call", "agent", {"call_id": "k1", "name": "t", "arguments": {}})
        store.append("tools", [call])
    finally:
        store.close()
    # Both were running on an instance that has gone silent.
    sql(
        pg_url,
        "UPDATE conversations SET status = 'running', owner = 'ghost', fence = 1,"
        " queue_order = 1, lease_expires = now() - interval '1 s'",
    )
    async with instance(pg_url, "all") as survivor:
        await wait_status(survivor, "clean", "finished")
        await wait_status(survivor, "tools", "paused")
        clean_events = await all_events(survivor, "clean")
        tool_events = await all_events(survivor, "tools")
    assert {"status": "queued", "reason": OWNER_LOST} in [e.data for e in clean_events]
    assert tool_events[-1].data == {"status": "paused", "reason": OWNER_LOST_IN_TOOLS}
    [answer] = [e for e in tool_events if e.kind == "tool_result"]
    assert answer.data["call_id"] == "k1"
    assert answer.data["error"] == f"lost: {OWNER_LOST_IN_TOOLS}"
    assert sql(pg_url, "SELECT count(*) FROM conversations WHERE owner IS NOT NULL") == [(0,)]


async def test_pause_and_interrupt_reach_a_run_another_instance_holds(
    anyio_backend: str, pg_url: str
) -> None:
    async with instance(pg_url, "worker") as worker, instance(pg_url, "api") as api:
        conv = await api.create(
            agent=sim(steps=10_000, think_ms=10), max_steps=10_000, initial_message="go"
        )
        await wait_status(api, conv.id, "running")
        view = await api.pause(conv.id)
        assert view.status == "running"
        assert view.pause_requested
        await wait_status(api, conv.id, "paused")
        assert (await all_events(api, conv.id))[-1].data["reason"] == PAUSE_REASON
        # A step far longer than the test's guard: only the interrupt ends it.
        second = await api.create(agent=sim(steps=2, think_ms=600_000), initial_message="go")
        await wait_status(api, second.id, "running")
        await api.interrupt(second.id)
        await wait_status(api, second.id, "paused")
        assert (await all_events(api, second.id))[-1].data["reason"] == INTERRUPT_REASON
        with anyio.fail_after(GUARD_S):
            while worker.runs.handles:
                await anyio.sleep(0.01)


async def test_a_message_reaches_a_run_another_instance_holds(
    anyio_backend: str, pg_url: str
) -> None:
    async with instance(pg_url, "worker") as worker, instance(pg_url, "api") as api:
        spec, gate = gate_spec()
        try:
            conv = await api.create(agent=spec, initial_message="first")
            await wait_status(api, conv.id, "running")
            await api.send_message(conv.id, "second")
        finally:
            gate.set()
        with anyio.fail_after(GUARD_S):
            while True:
                events = await all_events(api, conv.id)
                said = [
                    e.data["text"] for e in events if e.kind == "message" and e.source == "agent"
                ]
                if "second" in said and (await api.get(conv.id)).status == "finished":
                    break
                await anyio.sleep(0.01)
        assert said[0] == "first"
        # Its lease is given up once the run has gone.
        with anyio.fail_after(GUARD_S):
            while worker.runs.handles or worker.member.held:
                await anyio.sleep(0.01)


async def test_a_run_whose_lease_is_taken_stops_and_stores_nothing_more(
    anyio_backend: str, pg_url: str
) -> None:
    async with instance(pg_url, "all") as one:
        spec, gate = gate_spec()
        try:
            conv = await one.create(agent=spec, initial_message="a")
            await wait_status(one, conv.id, "running")
            # Another instance took the run over, as after a partition.
            sql(pg_url, "UPDATE conversations SET owner = 'thief', fence = fence + 1")
            before = len(await all_events(one, conv.id))
            with anyio.fail_after(GUARD_S):
                while one.member.held:
                    await anyio.sleep(0.01)
        finally:
            gate.set()
        with anyio.fail_after(GUARD_S):
            while one.runs.handles:
                await anyio.sleep(0.01)
        assert len(await all_events(one, conv.id)) == before
        assert statuses(await all_events(one, conv.id))[-1] == "running"


def _is_running(event: Event) -> bool:
    return event.data.get("status") == "running"


def _by_agent(event: Event) -> bool:
    return event.kind == "message" and event.source == "agent"


def _said(text: str) -> NewEvent:
    return NewEvent("message", "agent", {"text": text})


async def test_an_instance_that_stops_hands_its_runs_to_another(
    anyio_backend: str, pg_url: str
) -> None:
    stop_first = anyio.Event()

    async def run_first(*, task_status: TaskStatus[SharedConversationService]) -> None:
        async with instance(pg_url, "all", shutdown_grace_s=5) as first:
            task_status.started(first)
            await stop_first.wait()

    async with anyio.create_task_group() as tg:
        first = await tg.start(run_first)
        conv = await first.create(
            agent=sim(steps=40, think_ms=20), max_steps=100, initial_message="go"
        )
        await wait_status(first, conv.id, "running")
        async with instance(pg_url, "worker") as second:
            stop_first.set()
            await wait_status(second, conv.id, "finished")
            events = await all_events(second, conv.id)
    reasons = [e.data.get("reason") for e in events if e.kind == "status"]
    assert leases.HANDED_OVER in reasons
    owners = [e.data["lease"]["owner"] for e in events if _is_running(e)]
    assert owners == [first.member.id, second.member.id]


async def test_a_wait_on_one_instance_ends_with_a_run_on_another(
    anyio_backend: str, pg_url: str
) -> None:
    async with instance(pg_url, "worker") as worker, instance(pg_url, "api") as api:
        conv = await api.create(agent=sim(steps=3, think_ms=20), initial_message="go")
        waited = await waiting.current_run(api, conv.id).result(GUARD_S)
        assert waited.ended
        assert waited.conversation.status == "finished"
        assert statuses(waited.events)[-1] == "finished"
        event, _ = await api.send_message(conv.id, "again")
        again = await waiting.after_message(api, event, run=True).result(GUARD_S)
        assert again.ended
        assert again.events[0].seq == event.seq
        assert statuses(again.events)[-1] == "finished"
        # Nothing asked for a run: nothing to wait for.
        quiet, _ = await api.send_message(conv.id, "note", run=False)
        assert (await waiting.after_message(api, quiet, run=False).result(GUARD_S)).ended
        assert not worker.runs.handles


async def test_deleting_a_run_held_elsewhere_stops_it_now_and_ends_its_streams(
    anyio_backend: str, pg_url: str
) -> None:
    async with instance(pg_url, "worker") as worker, instance(pg_url, "api") as api:
        # A step far longer than the test's guard: only the delete ends it.
        conv = await api.create(agent=sim(steps=2, think_ms=600_000), initial_message="go")
        await wait_status(api, conv.id, "running")
        seen: list[Event] = []

        async def follow() -> None:
            async for event in api.subscribe(conv.id):
                seen.append(event)

        with anyio.fail_after(GUARD_S):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                while not seen:
                    await anyio.sleep(0.01)
                await api.delete(conv.id)
                while worker.runs.handles or worker.member.held:
                    await anyio.sleep(0.01)
        assert statuses(seen)[-1] == "running"


async def test_deltas_reach_followers_on_another_instance(anyio_backend: str, pg_url: str) -> None:
    async with instance(pg_url, "worker") as worker, instance(pg_url, "api") as api:
        conv = await api.create(agent=sim(steps=2, think_ms=200, deltas=8))
        pieces: list[Delta] = []
        events: list[Event] = []
        with anyio.fail_after(GUARD_S):
            async with api.follow(conv.id, deltas=True) as follower:
                await api.run(conv.id)
                async for batch in follower:
                    for item in batch:
                        if isinstance(item, Delta):
                            pieces.append(item)
                        else:
                            events.append(item.event)
                    if statuses(events)[-1:] == ["finished"]:
                        break
        said = [e for e in events if _by_agent(e)]
        assert len(said) == 2
        for step, message in enumerate(said, 1):
            text = "".join(_text(d) for d in pieces if d.step == step)
            assert text == message.data["text"]
        assert worker.member.id != api.member.id


def _text(delta: Delta) -> str:
    return str(msgspec.json.decode(delta.json)["text"])


async def test_followers_elsewhere_see_what_settling_a_lost_owner_writes(
    anyio_backend: str, pg_url: str
) -> None:
    # Its heartbeats far apart: the worker is the one to settle the run.
    async with instance(pg_url, "api", ttl_s=60) as api:
        conv = await api.create(agent=sim(steps=2), initial_message="go")
        call = NewEvent("tool_call", "agent", {"call_id": "k1", "name": "t", "arguments": {}})
        await api._append(conv.id, [call])
        sql(
            pg_url,
            "UPDATE conversations SET status = 'running', owner = 'ghost', fence = 1,"
            " queue_order = 1, lease_expires = now() - interval '1 s'",
        )
        seen: list[Event] = []

        async def follow() -> None:
            async for event in api.subscribe(conv.id):
                seen.append(event)
                if event.data.get("status") == "paused":
                    return

        with anyio.fail_after(GUARD_S):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                # Live, past what it replayed: what comes now comes through the relay.
                while not any(e.kind == "tool_call" for e in seen):
                    await anyio.sleep(0.01)
                async with instance(pg_url, "worker"):
                    while not seen or seen[-1].data.get("status") != "paused":
                        await anyio.sleep(0.01)
    assert [e.kind for e in seen[-2:]] == ["tool_result", "status"]
    assert seen[-1].data["reason"] == OWNER_LOST_IN_TOOLS


async def test_a_control_that_comes_before_its_run_starts_here_is_applied_as_it_starts(
    anyio_backend: str, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Heartbeats far apart: the control's copy in the row would come too late.
    async with instance(pg_url, "worker", ttl_s=60) as worker:
        start = worker.runs.start
        taken = anyio.Event()
        go_on = anyio.Event()

        async def held_start(*args: Any, **kwargs: Any) -> Any:
            taken.set()
            await go_on.wait()
            return await start(*args, **kwargs)

        monkeypatch.setattr(worker.runs, "start", held_start)
        async with instance(pg_url, "api", ttl_s=60) as api:
            conv = await api.create(agent=sim(steps=2, think_ms=600_000), initial_message="go")
            with anyio.fail_after(GUARD_S):
                await taken.wait()
            view = await api.interrupt(conv.id)
            assert view.pause_requested
            # The notification is on its way to the worker, which has the run
            # taken but not started.
            with anyio.fail_after(GUARD_S):
                while conv.id not in worker.member._early:
                    await anyio.sleep(0.01)
            go_on.set()
            await wait_status(api, conv.id, "paused")
            assert (await all_events(api, conv.id))[-1].data["reason"] == INTERRUPT_REASON


async def test_a_pause_asked_of_the_owner_itself_holds_if_the_owner_is_lost(
    anyio_backend: str, pg_url: str
) -> None:
    async with instance(pg_url, "all") as owner:
        # A step far longer than the guard: the pause waits for it, and the
        # owner is lost meanwhile.
        conv = await owner.create(agent=sim(steps=2, think_ms=600_000), initial_message="go")
        await wait_status(owner, conv.id, "running")
        assert (await owner.pause(conv.id)).pause_requested
        sql(pg_url, "UPDATE conversations SET lease_expires = now() - interval '1 s'")
        await wait_status(owner, conv.id, "paused")
        events = await all_events(owner, conv.id)
        with anyio.fail_after(GUARD_S):
            while owner.runs.handles:
                await anyio.sleep(0.01)
    # Paused by the owner's last write, if it came before the lease was
    # settled, or by the settling: either way paused, and not taken on.
    assert (events[-1].data["status"], events[-1].data["reason"]) == ("paused", PAUSE_REASON)
    assert OWNER_LOST not in [e.data.get("reason") for e in events]


async def test_the_watchdog_marks_a_stuck_run_under_its_lease(
    anyio_backend: str, pg_url: str
) -> None:
    async with instance(pg_url, "all", step_timeout_s=0.2) as one, gated_run(one) as conv:
        await wait_status(one, conv.id, "stuck")
        [stuck] = [e for e in await all_events(one, conv.id) if e.data.get("status") == "stuck"]
    assert stuck.data["lease"]["owner"] == one.member.id
