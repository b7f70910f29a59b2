"""What a restart makes of runs cut off by kill -9, under the real servers:
every tool call in the log gets exactly one result, and call ids stay unique
within the conversation."""

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
