"""The real server process under each backend (uvicorn for asyncio, hypercorn for
trio), driven over HTTP, Server-Sent Events and WebSocket on loopback."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from httpx_ws import WebSocketDisconnect, WebSocketUpgradeError, aconnect_ws

from tests.serverproc import ServerProcess, running_server

pytestmark = pytest.mark.anyio

GUARD_S = 30
C = "/api/conversations"
KEY = "e2e-key"
AUTH = {"X-Session-API-Key": KEY}


@pytest.fixture
def server(anyio_backend: str, tmp_path: Path) -> Iterator[ServerProcess]:
    args = ["--db", str(tmp_path / "e2e.db"), "--api-key", KEY, "--shutdown-grace-s", "2"]
    with running_server(anyio_backend, args) as proc:
        yield proc


def client_for(server: ServerProcess, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=GUARD_S, **kwargs)


async def create_sim(client: httpx.AsyncClient, **config: Any) -> dict[str, Any]:
    body = {"agent": {"kind": "sim", "config": config}, "initial_message": "go"}
    response = await client.post(C, json=body)
    assert response.status_code == 201, response.text
    conv: dict[str, Any] = response.json()
    return conv


async def read_sse(response: httpx.Response, until_status: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    seq_from_id: list[int] = []
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            seq_from_id.append(int(line[4:]))
        elif line.startswith("data: "):
            event = json.loads(line[6:])
            events.append(event)
            if event["kind"] == "status" and event["data"]["status"] == until_status:
                break
    assert seq_from_id == [e["seq"] for e in events]
    return events


async def test_http_sse_and_reconnect(server: ServerProcess) -> None:
    async with client_for(server) as client:
        conv = await create_sim(client, steps=20, think_ms=2, tools_per_step=2)
        url = f"{C}/{conv['id']}/events/stream"
        with anyio.fail_after(GUARD_S):
            async with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                events = await read_sse(r, "finished")
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(1, len(seqs) + 1))
        # A client reconnecting with its last seq gets exactly what follows it.
        with anyio.fail_after(GUARD_S):
            headers = {"Accept": "text/event-stream", "Last-Event-ID": "10"}
            async with client.stream("GET", url, headers=headers) as r:
                again = await read_sse(r, "finished")
        assert [e["seq"] for e in again] == seqs[10:]


async def test_websocket_replays_then_follows(server: ServerProcess) -> None:
    async with client_for(server) as client:
        conv = await create_sim(client, steps=1, think_ms=0)
        done = await wait_status(client, conv["id"], "finished")
        assert done["status"] == "finished"
        url = f"{server.base_url.replace('http', 'ws')}{C}/{conv['id']}/events/stream"
        with anyio.fail_after(GUARD_S):
            async with aconnect_ws(url, client) as ws:
                first: list[dict[str, Any]] = []
                while not first or first[-1]["data"].get("status") != "finished":
                    first.append(json.loads(await ws.receive_text()))
                # Live: a new message and its run arrive on the same socket.
                await client.post(f"{C}/{conv['id']}/messages", json={"content": "more"})
                live: list[dict[str, Any]] = []
                while not live or live[-1]["data"].get("status") != "finished":
                    live.append(json.loads(await ws.receive_text()))
        seqs = [e["seq"] for e in first + live]
        assert seqs == list(range(1, len(seqs) + 1))
        assert live[0]["data"] == {"text": "more"}


async def test_websocket_requires_the_key(server: ServerProcess) -> None:
    async with client_for(server) as client:
        conv = (await client.post(C, json={})).json()
        url = f"{server.base_url.replace('http', 'ws')}{C}/{conv['id']}/events/stream"
        async with httpx.AsyncClient(timeout=GUARD_S) as anonymous:
            with pytest.raises(WebSocketUpgradeError):
                async with aconnect_ws(url, anonymous):
                    pass
            bearer = {"Authorization": f"Bearer {KEY}"}
            async with (
                httpx.AsyncClient(timeout=GUARD_S, headers=bearer) as keyed,
                aconnect_ws(url + "?after_seq=0", keyed) as ws,
            ):
                assert json.loads(await ws.receive_text())["seq"] == 1
        assert (await anonymous_get(server, C)).status_code == 401


async def anonymous_get(server: ServerProcess, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
        return await client.get(path)


async def wait_status(client: httpx.AsyncClient, cid: str, status: str) -> dict[str, Any]:
    with anyio.fail_after(GUARD_S):
        while True:
            body: dict[str, Any] = (await client.get(f"{C}/{cid}")).json()
            if body["status"] == status:
                return body
            await anyio.sleep(0.01)


async def test_stalled_client_does_not_delay_the_run_or_others(server: ServerProcess) -> None:
    async with client_for(server) as client:
        conv = (
            await client.post(
                C, json={"agent": {"kind": "sim", "config": {"steps": 400}}, "max_steps": 400}
            )
        ).json()
        # A client that asks for the stream and then never reads a byte.
        stalled = socket.create_connection(("127.0.0.1", server.port))
        try:
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            request = (
                f"GET {C}/{conv['id']}/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"X-Session-API-Key: {KEY}\r\nAccept: text/event-stream\r\n\r\n"
            )
            stalled.sendall(request.encode())
            url = f"{C}/{conv['id']}/events/stream"
            await client.post(f"{C}/{conv['id']}/run")
            with anyio.fail_after(GUARD_S):
                async with client.stream("GET", url) as r:
                    events = await read_sse(r, "finished")
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            assert (await client.get(f"{C}/{conv['id']}")).json()["steps_done"] == 400
        finally:
            stalled.close()


async def test_a_thousand_subscribers_on_one_conversation(server: ServerProcess) -> None:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with client_for(server, limits=limits) as client:
        conv = (
            await client.post(C, json={"agent": {"kind": "sim", "config": {"steps": 5}}})
        ).json()
        url = f"{C}/{conv['id']}/events/stream"
        connected = 0
        received: list[int] = []
        all_connected = anyio.Event()

        async def subscriber() -> None:
            nonlocal connected
            async with client.stream("GET", url) as r:
                assert r.status_code == 200, await r.aread()
                connected += 1
                if connected == 1000:
                    all_connected.set()
                events = await read_sse(r, "finished")
                received.append(len(events))

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for _ in range(1000):
                    tg.start_soon(subscriber)
                await all_connected.wait()
                assert (await client.post(f"{C}/{conv['id']}/run")).status_code == 202
        total = (await client.get(f"{C}/{conv['id']}/events/count")).json()["count"]
        assert received == [total] * 1000


async def test_sigterm_with_open_stream_shuts_down_cleanly(
    anyio_backend: str, tmp_path: Path
) -> None:
    db = tmp_path / "stop.db"
    with running_server(anyio_backend, ["--db", str(db), "--shutdown-grace-s", "1"]) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            body = {
                "agent": {"kind": "sim", "config": {"steps": 100_000, "think_ms": 1}},
                "initial_message": "go",
                "max_steps": 100_000,
            }
            conv = (await client.post(C, json=body)).json()
            await wait_status(client, conv["id"], "running")
            streamed: list[str] = []

            async def follow() -> None:
                url = f"{C}/{conv['id']}/events/stream"
                with contextlib.suppress(httpx.TransportError):
                    async with client.stream("GET", url) as r:
                        async for line in r.aiter_lines():
                            streamed.append(line)

            with anyio.fail_after(GUARD_S):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(follow)
                    while not streamed:
                        await anyio.sleep(0.01)
                    await anyio.to_thread.run_sync(server.stop)
    assert server.proc.returncode == 0
    output = server.output()
    assert "Traceback" not in output
    with running_server(anyio_backend, ["--db", str(db)]) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            after = (await client.get(f"{C}/{conv['id']}")).json()
    assert after["status"] == "paused"
    assert 0 < after["steps_done"] < 100_000


async def test_websocket_closes_with_a_code_for_bad_input(server: ServerProcess) -> None:
    base = f"{server.base_url.replace('http', 'ws')}{C}"
    async with client_for(server) as client:
        conv = (await client.post(C, json={})).json()
        cases = [
            (f"{base}/nope/events/stream", 4404),
            (f"{base}/{conv['id']}/events/stream?after_seq=-1", 1008),
        ]
        for url, code in cases:
            codes: list[int] = []
            with anyio.fail_after(GUARD_S):
                try:
                    async with aconnect_ws(url, client) as ws:
                        await ws.receive_text()
                except* WebSocketDisconnect as group:
                    codes += [exc.code for exc in group.exceptions]  # type: ignore[attr-defined]
            assert codes == [code]


async def test_sigterm_does_not_wait_for_a_step_past_the_grace_period(
    anyio_backend: str, tmp_path: Path
) -> None:
    db = str(tmp_path / "blocked.db")
    with running_server(anyio_backend, ["--db", db, "--shutdown-grace-s", "1"]) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            body = {
                "agent": {"kind": "sim", "config": {"think_ms": 120_000}},
                "initial_message": "x",
            }
            conv = (await client.post(C, json=body)).json()
            await wait_status(client, conv["id"], "running")
            # The step blocks for two minutes; stopping must not wait for it.
            assert await anyio.to_thread.run_sync(server.stop) == 0
    with running_server(anyio_backend, ["--db", db]) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            after = (await client.get(f"{C}/{conv['id']}")).json()
    assert after["status"] == "paused"
