"""Deltas through the real server process under each backend: SSE and WebSocket
subscribers that ask for them and one that does not, on one run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from httpx_ws import aconnect_ws

from tests.serverproc import ServerProcess, running_server
from tests.test_api_deltas import as_messages, check_deltas, events_only, finished

pytestmark = pytest.mark.anyio

GUARD_S = 30
C = "/api/conversations"
SIM = {"kind": "sim", "config": {"steps": 3, "think_ms": 60, "deltas": 6}}


@pytest.fixture
def server(anyio_backend: str, tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(anyio_backend, ["--db", str(tmp_path / "deltas.db")]) as proc:
        yield proc


async def read_sse(response: httpx.Response, replayed: anyio.Event) -> list[dict[str, str]]:
    """Frames as their fields by name, until the run's finished status; sets
    ``replayed`` on the first, after which the stream follows live."""
    frames: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
            continue
        if fields:
            frames.append(fields)
            replayed.set()
            if finished(json.loads(fields["data"])):
                return frames
            fields = {}
    raise AssertionError("the stream ended before the run did")


async def test_deltas_over_sse_and_websocket(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
        cid = (await client.post(C, json={"agent": SIM})).json()["id"]
        url = f"{C}/{cid}/events/stream"
        sse: dict[str, list[dict[str, str]]] = {}
        ws: list[dict[str, Any]] = []
        replayed = {name: anyio.Event() for name in ("deltas", "plain", "ws")}

        async def follow_sse(name: str, params: dict[str, str]) -> None:
            async with client.stream("GET", url, params=params) as response:
                assert response.status_code == 200
                sse[name] = await read_sse(response, replayed[name])

        async def follow_ws() -> None:
            ws_url = f"{server.base_url.replace('http', 'ws')}{url}?deltas=true"
            async with aconnect_ws(ws_url, client) as socket:
                ws.append(json.loads(await socket.receive_text()))
                replayed["ws"].set()
                while not finished(ws[-1]):
                    ws.append(json.loads(await socket.receive_text()))

        with anyio.fail_after(GUARD_S):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow_sse, "deltas", {"deltas": "true"})
                tg.start_soon(follow_sse, "plain", {})
                tg.start_soon(follow_ws)
                for event in replayed.values():
                    await event.wait()
                await client.post(f"{C}/{cid}/messages", json={"content": "go"})
        events = (await client.get(f"{C}/{cid}/events", params={"limit": 500})).json()["items"]
    with_deltas = sse["deltas"]
    assert all(("id" in f) != (f.get("event") == "delta") for f in with_deltas)
    check_deltas(as_messages(with_deltas), cid, [1, 2, 3])
    assert events_only(as_messages(with_deltas)) == events
    assert [set(f) for f in sse["plain"]] == [{"id", "data"}] * len(events)
    assert as_messages(sse["plain"]) == events
    check_deltas(ws, cid, [1, 2, 3])
    assert events_only(ws) == events
