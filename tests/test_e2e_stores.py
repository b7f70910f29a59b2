"""The real server process on each store (a SQLite file, a PostgreSQL
database) and each event loop: a run's events are stored, searchable, and
still there after a restart on the same database."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from tests.serverproc import running_server
from tests.test_e2e import GUARD_S, C, create_sim, wait_status

pytestmark = pytest.mark.anyio


async def test_a_run_is_stored_searchable_and_kept_across_a_restart(
    anyio_backend: str, store_db: str
) -> None:
    args = ["--db", store_db, "--shutdown-grace-s", "1"]
    with running_server(anyio_backend, args) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            conv = await create_sim(client, steps=5, think_ms=1, tools_per_step=2)
            await wait_status(client, conv["id"], "finished")
            url = f"{C}/{conv['id']}/events"
            calls = (await client.get(url, params={"kind": "tool_call"})).json()
            found = (await client.get(url, params={"text": "GO", "source": "user"})).json()
            everything = (await client.get(url, params={"limit": 500})).json()
            count = (await client.get(f"{url}/count")).json()["count"]
    assert len(calls["items"]) == 10
    assert [e["data"]["text"] for e in found["items"]] == ["go"]
    seqs = [e["seq"] for e in everything["items"]]
    assert seqs == list(range(1, count + 1))

    with running_server(anyio_backend, ["--db", store_db]) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            again: dict[str, Any] = (await client.get(f"{C}/{conv['id']}")).json()
            with anyio.fail_after(GUARD_S):
                after = (await client.get(url, params={"limit": 500})).json()
    assert again["status"] == "finished"
    assert after["items"] == everything["items"]
