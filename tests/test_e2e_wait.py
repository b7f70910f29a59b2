"""Waiting for a run against the real server under each backend (uvicorn for
asyncio, hypercorn for trio), with clients that stay and clients that leave."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests import file_gate
from tests.serverproc import ServerProcess, running_server
from tests.test_api_waits import statuses
from tests.test_e2e import AUTH, GUARD_S, KEY, C

pytestmark = pytest.mark.anyio


@pytest.fixture
def server(anyio_backend: str, tmp_path: Path) -> Iterator[ServerProcess]:
    args = ["--db", str(tmp_path / "wait.db"), "--api-key", KEY, "--shutdown-grace-s", "2"]
    with running_server(anyio_backend, [*args, "--agent", file_gate.NAME]) as proc:
        yield proc
    output = proc.output()
    assert "Traceback" not in output, output
    assert "ASGI callable" not in output, output


def client_for(server: ServerProcess, timeout: float = GUARD_S) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=timeout)


def replies(body: dict[str, Any]) -> list[str]:
    return [e["data"]["text"] for e in body["events"] if e["source"] == "agent"]


async def test_create_message_and_get_wait_answer_once_the_run_has_ended(
    server: ServerProcess,
) -> None:
    async with client_for(server) as client:
        agent = {"kind": "sim", "config": {"steps": 3, "tools_per_step": 1}}
        created = await client.post(C, json={"agent": agent, "initial_message": "go", "wait": True})
        assert created.status_code == 201, created.text
        body = created.json()
        cid = body["conversation"]["id"]
        assert created.headers["location"] == f"{C}/{cid}"
        assert body["conversation"]["status"] == "finished"
        assert statuses(body) == ["idle", "queued", "running", "finished"]
        seqs = [e["seq"] for e in body["events"]]
        assert seqs == list(range(1, len(seqs) + 1))
        sent = await client.post(f"{C}/{cid}/messages", json={"content": "more", "wait": True})
        assert sent.status_code == 200, sent.text
        assert sent.json()["events"][0]["seq"] == seqs[-1] + 1
        assert sent.json()["conversation"]["status"] == "finished"
        idle = await client.get(f"{C}/{cid}/wait", params={"after_seq": seqs[-1]})
        assert idle.status_code == 200
        assert idle.json()["events"] == sent.json()["events"]
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as anonymous:
            assert (await anonymous.get(f"{C}/{cid}/wait")).status_code == 401


async def test_a_wait_times_out_with_202_and_a_client_gone_leaves_the_run_alone(
    server: ServerProcess, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    agent = {"kind": file_gate.NAME, "config": {"path": str(gate)}}
    async with client_for(server) as client:
        created = await client.post(C, json={"agent": agent, "initial_message": "a"})
        cid = created.json()["id"]
        url = f"{C}/{cid}/wait"
        early = await client.get(url, params={"timeout_s": 0.05})
        assert early.status_code == 202, early.text
        assert early.json()["conversation"]["status"] in ("queued", "running")
        # A client that gives up mid-wait closes its connection.
        async with client_for(server, timeout=0.2) as impatient:
            with pytest.raises(httpx.ReadTimeout):
                await impatient.post(f"{C}/{cid}/messages", json={"content": "b", "wait": True})
            with pytest.raises(httpx.ReadTimeout):
                await impatient.get(url)
        conv = (await client.get(f"{C}/{cid}")).json()
        assert conv["status"] in ("queued", "running")
        assert conv["pause_requested"] is False
        gate.touch()
        with anyio.fail_after(GUARD_S):
            # Which run reads "b" depends on when its request got in; some run does.
            while True:
                done = await client.get(url, params={"timeout_s": GUARD_S})
                assert done.status_code == 200, done.text
                body = done.json()
                if replies(body) == ["a", "b"]:
                    break
        assert body["conversation"]["status"] == "finished"
        assert (await client.get("/health")).status_code == 200
