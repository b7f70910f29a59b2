"""Interrupt, and what a message does to a run in flight (``if_running``), over HTTP."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from tests.apiclient import api_client, service
from tests.test_api import GUARD_S, C, assert_error, wait_status

pytestmark = pytest.mark.anyio

# Far longer than GUARD_S: a test that passes did not wait for the step to end.
LONG_MS = 60_000
READ_ONE = "step {} of 3 (read 1 new message(s)) interrupted"


def sim(**config: Any) -> dict[str, Any]:
    return {"agent": {"kind": "sim", "config": config}, "initial_message": "go"}


async def events(client: httpx.AsyncClient, cid: str, **query: Any) -> list[dict[str, Any]]:
    page = (await client.get(f"{C}/{cid}/events", params={"limit": 500, **query})).json()
    items: list[dict[str, Any]] = page["items"]
    return items


async def statuses(client: httpx.AsyncClient, cid: str) -> list[tuple[str, str | None]]:
    return [
        (e["data"]["status"], e["data"].get("reason"))
        for e in await events(client, cid, kind="status")
    ]


async def wait_steps(client: httpx.AsyncClient, cid: str, steps: int) -> None:
    with anyio.fail_after(GUARD_S):
        while (await client.get(f"{C}/{cid}")).json()["steps_done"] < steps:
            await anyio.sleep(0.005)


async def wait_stepping(client: httpx.AsyncClient, cid: str) -> None:
    """Until the run's thread is inside a step (the step clock is running)."""
    await wait_status(client, cid, "running")
    with anyio.fail_after(GUARD_S):
        while not any(
            e["data"]["status"] == "running"
            for e in await events(client, cid)
            if e["kind"] == "status"
        ):
            await anyio.sleep(0.005)
    await anyio.sleep(0.05)


async def test_interrupt_stops_a_long_step_now_and_pauses_the_run() -> None:
    async with api_client() as client:
        conv = (await client.post(C, json=sim(steps=5, think_ms=LONG_MS))).json()
        await wait_stepping(client, conv["id"])
        answer = await client.post(f"{C}/{conv['id']}/interrupt")
        assert answer.status_code == 200
        # The guard is a quarter of the step: the step did not run to its end.
        body = await wait_status(client, conv["id"], "paused")
        assert body["pause_requested"] is False
        assert (await statuses(client, conv["id"]))[-1] == ("paused", "interrupted")
        texts = [e["data"]["text"] for e in await events(client, conv["id"], kind="message")]
        assert texts[-1] == "step 1 of 5 (read 1 new message(s)) interrupted"
        assert service(client).lanes.run.running == 0
        # It goes on when asked.
        assert (await client.post(f"{C}/{conv['id']}/run")).status_code == 202
        await wait_stepping(client, conv["id"])
        await client.post(f"{C}/{conv['id']}/interrupt")
        await wait_status(client, conv["id"], "paused")


async def test_interrupt_takes_a_queued_run_out_of_the_queue() -> None:
    async with api_client(run_lane_size=1) as client:
        blocker = (await client.post(C, json=sim(steps=1, think_ms=LONG_MS))).json()
        queued = (await client.post(C, json=sim(steps=1))).json()
        assert queued["status"] == "queued"
        answer = (await client.post(f"{C}/{queued['id']}/interrupt")).json()
        assert (answer["status"], answer["queue_position"]) == ("paused", None)
        assert (await statuses(client, queued["id"]))[-1] == ("paused", "interrupted")
        await client.post(f"{C}/{blocker['id']}/interrupt")
        await wait_status(client, blocker["id"], "paused")


async def test_interrupting_a_conversation_with_no_run_changes_nothing() -> None:
    async with api_client() as client:
        conv = (await client.post(C, json={"initial_message": "hi", "run": False})).json()
        before = await events(client, conv["id"])
        answer = await client.post(f"{C}/{conv['id']}/interrupt")
        assert answer.status_code == 200
        assert answer.json()["status"] == "idle"
        assert await events(client, conv["id"]) == before
        assert_error(await client.post(f"{C}/nope/interrupt"), 404, "not_found")


async def test_tool_calls_under_way_keep_their_tokens_and_store_their_results_later() -> None:
    # One tool token: of the step's two calls one runs, the other waits for it.
    async with api_client(tool_lane_size=1) as client:
        body = sim(steps=2, tools_per_step=2, tool_ms=1_500)
        conv = (await client.post(C, json=body)).json()
        lanes = service(client).lanes
        with anyio.fail_after(GUARD_S):
            while lanes.tool.running < 1 or lanes.tool.waiting < 1:
                await anyio.sleep(0.005)
        await client.post(f"{C}/{conv['id']}/interrupt")
        await wait_status(client, conv["id"], "paused")
        # Paused while its running call still holds its token.
        assert lanes.tool.running == 1
        [not_run] = await events(client, conv["id"], kind="tool_result")
        assert not_run["data"]["error"] == "not run: interrupted"
        results = [not_run]
        with anyio.fail_after(GUARD_S):
            while len(results) < 2:
                await anyio.sleep(0.02)
                results = await events(client, conv["id"], kind="tool_result")
        ran = ({"s1t0", "s1t1"} - {not_run["data"]["call_id"]}).pop()
        assert results[1]["data"] == {
            "call_id": ran,
            "name": "sleep",
            "output": {"slept_ms": 1500},
        }
        # After the paused status: stored when it returned.
        paused_seq = (await events(client, conv["id"], kind="status"))[-1]["seq"]
        assert results[1]["seq"] > paused_seq
        assert lanes.tool.snapshot().running == 0


async def test_a_message_that_interrupts_goes_on_in_the_same_run() -> None:
    async with api_client() as client:
        conv = (await client.post(C, json=sim(steps=3, think_ms=LONG_MS))).json()
        await wait_stepping(client, conv["id"])
        admitted = service(client).lanes.run.snapshot().admitted
        message = {"content": "now this", "if_running": "interrupt"}
        answer = await client.post(f"{C}/{conv['id']}/messages", json=message)
        assert answer.status_code == 202
        # The interrupted step, then the next one, which read the message.
        await wait_steps(client, conv["id"], 1)
        with anyio.fail_after(GUARD_S):
            while len(await events(client, conv["id"], kind="message", source="agent")) < 1:
                await anyio.sleep(0.005)
        texts = [e["data"]["text"] for e in await events(client, conv["id"], source="agent")]
        assert texts == [READ_ONE.format(1)]
        await wait_stepping(client, conv["id"])
        # One run, the same token: nothing was queued again.
        assert service(client).lanes.run.snapshot().admitted == admitted
        assert [s for s, _ in await statuses(client, conv["id"])] == ["idle", "queued", "running"]
        await client.post(f"{C}/{conv['id']}/interrupt")
        await wait_status(client, conv["id"], "paused")
        texts = [e["data"]["text"] for e in await events(client, conv["id"], source="agent")]
        assert texts == [READ_ONE.format(1), READ_ONE.format(2)]


async def test_a_message_that_interrupts_an_idle_conversation_starts_a_run() -> None:
    async with api_client() as client:
        conv = (await client.post(C, json={"agent": {"kind": "echo"}})).json()
        message = {"content": "hi", "if_running": "interrupt"}
        assert (await client.post(f"{C}/{conv['id']}/messages", json=message)).status_code == 202
        await wait_status(client, conv["id"], "finished")


async def test_a_message_that_rejects_is_refused_while_a_run_is_queued_or_running() -> None:
    async with api_client(run_lane_size=1) as client:
        running = (await client.post(C, json=sim(steps=1, think_ms=LONG_MS))).json()
        queued = (await client.post(C, json=sim(steps=1))).json()
        await wait_status(client, running["id"], "running")
        for conv in (running, queued):
            count = len(await events(client, conv["id"]))
            message = {"content": "not now", "if_running": "reject"}
            answer = await client.post(f"{C}/{conv['id']}/messages", json=message)
            assert_error(answer, 409, "conflict")
            assert len(await events(client, conv["id"])) == count
        await client.post(f"{C}/{queued['id']}/pause")
        await client.post(f"{C}/{running['id']}/interrupt")
        await wait_status(client, running["id"], "paused")
        # With nothing in flight it is an ordinary message, and starts a run.
        message = {"content": "now", "if_running": "reject"}
        answer = await client.post(f"{C}/{queued['id']}/messages", json=message)
        assert answer.status_code == 202
        await wait_status(client, queued["id"], "finished")


async def test_if_running_takes_only_its_three_values() -> None:
    async with api_client() as client:
        conv = (await client.post(C, json={"agent": {"kind": "echo"}})).json()
        answer = await client.post(
            f"{C}/{conv['id']}/messages", json={"content": "x", "if_running": "queue"}
        )
        error = assert_error(answer, 422, "validation_error")
        assert "if_running" in error["message"]
        document = (await client.get("/openapi.json")).json()
        assert "post" in document["paths"][C + "/{id}/interrupt"]
