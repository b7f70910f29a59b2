"""A full disk under the real servers: the database on a small tmpfs that the
test fills while a run writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.rawhttp import RawConnection
from tests.serverproc import running_server
from tests.smalldisk import small_disk
from tests.test_e2e import GUARD_S, C, wait_status
from tests.test_full_disk import integrity

pytestmark = pytest.mark.anyio


async def wait_ready(client: httpx.AsyncClient, status: int) -> httpx.Response:
    with anyio.fail_after(GUARD_S):
        while (response := await client.get("/ready")).status_code != status:
            await anyio.sleep(0.05)
    return response


async def test_a_full_disk_ends_runs_in_error_refuses_writes_and_recovers(
    anyio_backend: str, tmp_path: Path
) -> None:
    with small_disk(tmp_path) as disk:
        db = disk.root / "x.db"
        args = ["--db", str(db), "--shutdown-grace-s", "1"]
        with running_server(anyio_backend, args) as server:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
                body: dict[str, Any] = {
                    "agent": {"kind": "sim", "config": {"steps": 100_000, "think_ms": 2}},
                    "initial_message": "go",
                    "max_steps": 100_000,
                }
                conv = (await client.post(C, json=body)).json()
                await wait_status(client, conv["id"], "running")
                acked = []
                for i in range(20):
                    sent = await client.post(
                        f"{C}/{conv['id']}/messages", json={"content": f"m{i}", "run": False}
                    )
                    assert sent.status_code == 202
                    acked.append(f"m{i}")
                disk.fill()
                failed = await wait_status(client, conv["id"], "error")
                assert "full" in failed["last_error"]

                def refused_then_served() -> None:
                    with RawConnection(server.port) as conn:
                        path = f"{C}/{conv['id']}/messages"
                        answer = conn.request("POST", path, b'{"content": "while full"}')
                        assert answer.status == 503
                        assert answer.json()["error"]["code"] == "store_unavailable"
                        assert "full" in answer.json()["error"]["message"]
                        assert int(answer.headers["retry-after"]) >= 1
                        ready = conn.request("GET", "/ready")
                        assert ready.status == 503
                        assert ready.json()["status"] == "store_unavailable"
                        assert conn.request("GET", f"{C}/{conv['id']}").status == 200

                await anyio.to_thread.run_sync(refused_then_served)
                disk.free()
                await wait_ready(client, 200)
                sent = await client.post(
                    f"{C}/{conv['id']}/messages", json={"content": "after", "run": False}
                )
                assert sent.status_code == 202
                acked.append("after")
        assert integrity(db) == "ok"
        with running_server(anyio_backend, ["--db", str(db)]) as server:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
                after = (await client.get(f"{C}/{conv['id']}")).json()
                params = {"kind": "message", "source": "user", "limit": 500}
                page = (await client.get(f"{C}/{conv['id']}/events", params=params)).json()
                errors = (await client.get(f"{C}/{conv['id']}/events?kind=error")).json()
        assert after["status"] == "error"
        assert [e["data"]["text"] for e in page["items"]] == ["go", *acked]
        assert [e["data"]["type"] for e in errors["items"]] == ["StoreUnavailable"]
