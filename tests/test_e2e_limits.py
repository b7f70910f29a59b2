"""Bad input against the real servers, uvicorn and hypercorn: both answer it the
same way, with the usual error body, and keep the connection open."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from httpx_ws import WebSocketDisconnect, aconnect_ws

from laneway.api.encoding import MAX_JSON_DEPTH
from tests.rawhttp import RawConnection
from tests.serverproc import ServerProcess, running_server
from tests.test_e2e import AUTH, GUARD_S, KEY, C

pytestmark = pytest.mark.anyio


@pytest.fixture
def server(anyio_backend: str, tmp_path: Path) -> Iterator[ServerProcess]:
    args = ["--db", str(tmp_path / "limits.db"), "--api-key", KEY, "--shutdown-grace-s", "1"]
    with running_server(anyio_backend, args) as proc:
        yield proc


def error_code(body: bytes) -> str:
    code: str = json.loads(body)["error"]["code"]
    return code


async def test_deep_json_is_a_400_and_the_connection_stays(server: ServerProcess) -> None:
    def check() -> None:
        with RawConnection(server.port) as conn:
            for depth in (MAX_JSON_DEPTH + 1, 1_000, 10_000, 100_000):
                deep = b"[" * depth + b"]" * depth
                answer = conn.request("POST", C, deep, AUTH)
                assert answer.status == 400, answer.body[:200]
                assert error_code(answer.body) == "bad_request"
                # The same connection goes on serving.
                assert conn.request("GET", C + "/count", None, AUTH).json() == {"count": 0}
            assert not conn.closed_by_server()

    await anyio.to_thread.run_sync(check)


async def test_heads_over_the_limit_are_a_431_on_both_servers(server: ServerProcess) -> None:
    def check() -> None:
        with RawConnection(server.port) as conn:
            for size in (20_000, 70_000):
                answer = conn.request("GET", C, None, {**AUTH, "X-Big": "x" * size})
                assert answer.status == 431
                assert error_code(answer.body) == "request_head_too_large"
            answer = conn.request("GET", f"{C}/{'d' * 100_000}", None, AUTH)
            assert answer.status == 431
            assert len(answer.body) < 300

    await anyio.to_thread.run_sync(check)


async def test_a_long_id_is_a_short_404(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=GUARD_S) as c:
        response = await c.get(f"{C}/{'e' * 5_000}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert len(response.content) < 200


async def test_websocket_with_a_wrong_key_is_a_401(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=GUARD_S) as c:
        conv = (await c.post(C, json={})).json()
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }

    def handshake(key: dict[str, str]) -> tuple[int, bytes]:
        with RawConnection(server.port) as conn:
            answer = conn.request("GET", f"{C}/{conv['id']}/events/stream", None, upgrade | key)
        return answer.status, answer.body

    for key in ({}, {"X-Session-API-Key": "wrong"}):
        status, body = await anyio.to_thread.run_sync(handshake, key)
        assert status == 401
        assert error_code(body) == "unauthorized"
    status, _ = await anyio.to_thread.run_sync(handshake, AUTH)
    assert status == 101


async def test_a_binary_frame_closes_the_websocket_with_1003(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=GUARD_S) as c:
        conv = (await c.post(C, json={"initial_message": "hi"})).json()
        url = f"{server.base_url.replace('http', 'ws')}{C}/{conv['id']}/events/stream"
        codes: list[int] = []
        with anyio.fail_after(GUARD_S):
            try:
                async with aconnect_ws(url, c) as ws:
                    assert json.loads(await ws.receive_text())["seq"] == 1
                    await ws.send_text("text frames are ignored")
                    await ws.send_bytes(b"\x00\x01")
                    while True:
                        await ws.receive_text()
            except* WebSocketDisconnect as group:
                codes += [exc.code for exc in group.exceptions]  # type: ignore[attr-defined]
        assert codes == [1003]
        # The server goes on.
        assert (await c.get(f"{C}/{conv['id']}")).status_code == 200
