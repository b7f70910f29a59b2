"""What a restart makes of runs cut off by kill -9, under the real servers:
every tool call in the log gets exactly one result, call ids stay unique
within the conversation, and queued runs are queued again in their order."""

from __future__ import annotations

import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.serverproc import running_server
from tests.test_e2e import GUARD_S, C, wait_status

pytestmark = pytest.mark.anyio


async def tool_events(client: httpx.AsyncClient, cid: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for kind in ("tool_call", "tool_result"):
        page = await client.get(f"{C}/{cid}/events", params={"kind": kind, "limit": 500})
        found += page.json()["items"]
    return sorted(found, key=lambda e: e["seq"])


def tools_waiting(db: str) -> int:
    # The store's own notes of calls waiting for a token, read beside the server.
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute("SELECT count(*) FROM tool_waits").fetchone()
    return int(count)


def sim(**config: Any) -> dict[str, Any]:
    return {"agent": {"kind": "sim", "config": config}, "initial_message": "go"}


async def test_runs_cut_off_by_a_kill_answer_their_calls_and_keep_ids_unique(
    anyio_backend: str, tmp_path: Path
) -> None:
    db = str(tmp_path / "killed.db")
    # One tool token: of a step's two calls, one runs and one waits for it.
    args = ["--db", db, "--tool-lane-size", "1"]
    with running_server(anyio_backend, args) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            stepping = (
                await client.post(C, json=sim(steps=6, tools_per_step=1, think_ms=200))
            ).json()
            with anyio.fail_after(GUARD_S):
                while (await client.get(f"{C}/{stepping['id']}")).json()["steps_done"] < 2:
                    await anyio.sleep(0.02)
            body = sim(steps=3, tools_per_step=2, tool_ms=60_000)
            blocked = (await client.post(C, json=body)).json()
            with anyio.fail_after(GUARD_S):
                while await anyio.to_thread.run_sync(tools_waiting, db) < 1:
                    await anyio.sleep(0.02)
                while (await client.get("/api/lanes")).json()["lanes"]["tool"]["running"] < 1:
                    await anyio.sleep(0.02)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(GUARD_S)
    with running_server(anyio_backend, ["--db", db]) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            assert (await client.get(f"{C}/{blocked['id']}")).json()["status"] == "paused"
            events = await tool_events(client, blocked["id"])
            assert [e["data"]["call_id"] for e in events[:2]] == ["s1t0", "s1t1"]
            assert {e["data"]["call_id"] for e in events[2:]} == {"s1t0", "s1t1"}
            # Whichever got the token had begun; the other had not.
            assert sorted(e["data"]["error"] for e in events[2:]) == [
                "lost: interrupted by restart",
                "not run: interrupted by restart",
            ]
            # The other runs on, and the remade agent's calls have ids of their own.
            assert (await client.post(f"{C}/{stepping['id']}/run")).status_code == 202
            await wait_status(client, stepping["id"], "finished")
            events = await tool_events(client, stepping["id"])
    calls = Counter(e["data"]["call_id"] for e in events if e["kind"] == "tool_call")
    answered = Counter(e["data"]["call_id"] for e in events if e["kind"] == "tool_result")
    # Two or more steps before the kill, six more by the agent made after it.
    assert len(calls) >= 8
    assert set(calls.values()) == {1}, calls
    assert answered == calls


async def queue_positions(client: httpx.AsyncClient) -> dict[str, int]:
    """Every queued conversation's place, read in one request."""
    page = await client.get(C, params={"status": "queued", "limit": 500})
    return {c["id"]: c["queue_position"] for c in page.json()["items"]}


async def test_50_queued_runs_are_queued_again_after_a_kill_in_their_order_and_finish(
    anyio_backend: str, tmp_path: Path
) -> None:
    args = ["--db", str(tmp_path / "queued.db"), "--run-lane-size", "1"]
    with running_server(anyio_backend, args) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            blocker = (await client.post(C, json=sim(steps=1, think_ms=60_000))).json()
            await wait_status(client, blocker["id"], "running")
            # First in the queue: after the restart it has the token, and steps
            # until paused, so that the 50 behind it stay put to be read.
            body = {**sim(steps=1_000_000, think_ms=5), "max_steps": 100_000}
            head = (await client.post(C, json=body)).json()
            queued = []
            for n in range(50):
                response = await client.post(C, json={"initial_message": f"q{n}"})
                assert response.status_code == 201, response.text
                queued.append(response.json()["id"])
            before = await queue_positions(client)
            assert [before[cid] for cid in [head["id"], *queued]] == list(range(1, 52))
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(GUARD_S)
    with running_server(anyio_backend, args) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            paused = await wait_status(client, blocker["id"], "paused")
            assert paused["queue_position"] is None
            await wait_status(client, head["id"], "running")
            after = await queue_positions(client)
            assert after == {cid: n for n, cid in enumerate(queued, 1)}
            assert (await client.post(f"{C}/{head['id']}/pause")).status_code == 200
            await wait_status(client, head["id"], "paused")
            for n, cid in enumerate(queued):
                await wait_status(client, cid, "finished")
                page = await client.get(f"{C}/{cid}/events", params={"limit": 500})
                events = page.json()["items"]
                assert [e["data"] for e in events if e["kind"] == "status"] == [
                    {"status": "idle", "reason": "created"},
                    {"status": "queued"},
                    {"status": "queued", "reason": "requeued after restart"},
                    {"status": "running"},
                    {"status": "finished", "reason": "agent finished"},
                ]
                assert [e["data"]["text"] for e in events if e["kind"] == "message"] == [
                    f"q{n}"
                ] * 2
