"""Three real laneway processes on one PostgreSQL database: runs spread over
them, one is killed mid-run, and the survivors settle its runs by the rules of
leases, with no event lost, no seq gap, no run with two owners at once, and
streams on the survivors that saw every event."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import anyio
import httpx
import pytest

from laneway.cluster.leases import OWNER_LOST, OWNER_LOST_IN_TOOLS
from tests.cliproc import cli
from tests.serverproc import ServerProcess, running_server
from tests.test_e2e import C

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

GUARD_S = 60
RUNS = 60
TTL_S = "2"


def _instances(backend: str, url: str, count: int, *args: str) -> Iterator[list[ServerProcess]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                running_server(
                    backend,
                    ["--db", url, "--lease-ttl-s", TTL_S, "--run-lane-size", "8", *args],
                )
            )
            for _ in range(count)
        ]


@pytest.fixture
def three(anyio_backend: str, pg_url: str) -> Iterator[list[ServerProcess]]:
    yield from _instances(anyio_backend, pg_url, 3)


async def _statuses(client: httpx.AsyncClient, ids: list[str]) -> dict[str, str]:
    found = {}
    for cid in ids:
        found[cid] = (await client.get(f"{C}/{cid}")).json()["status"]
    return found


async def _events(client: httpx.AsyncClient, cid: str) -> list[dict[str, Any]]:
    page = (await client.get(f"{C}/{cid}/events", params={"limit": 500})).json()
    items: list[dict[str, Any]] = page["items"]
    return items


async def _follow(
    client: httpx.AsyncClient, cid: str, into: dict[str, list[dict[str, Any]]]
) -> None:
    headers = {"Accept": "text/event-stream"}
    async with client.stream("GET", f"{C}/{cid}/events/stream", headers=headers) as response:
        into[cid] = await _read_until_settled(response)


async def _read_until_settled(response: httpx.Response) -> list[dict[str, Any]]:
    """Frames up to a final status: finished, or paused by its owner's loss."""
    events: list[dict[str, Any]] = []
    async for line in response.aiter_lines():
        if not line.startswith("data: "):
            continue
        event = json.loads(line[6:])
        events.append(event)
        data = event["data"]
        if event["kind"] == "status" and (
            data["status"] == "finished"
            or (data["status"] == "paused" and data.get("reason") == OWNER_LOST_IN_TOOLS)
        ):
            break
    return events


async def test_a_killed_instance_s_runs_go_on_or_pause_and_nothing_is_lost(
    anyio_backend: str, three: list[ServerProcess]
) -> None:
    victim = three[0]
    clients = [httpx.AsyncClient(base_url=s.base_url, timeout=GUARD_S) for s in three]
    streamed: dict[str, list[dict[str, Any]]] = {}
    try:
        ids = []
        for i in range(RUNS):
            body = {
                "agent": {
                    "kind": "sim",
                    "config": {"steps": 12, "think_ms": 40, "tools_per_step": 1, "tool_ms": 40},
                },
                "initial_message": "go",
            }
            response = await clients[i % 3].post(C, json=body)
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        watched = ids[:: RUNS // 10]
        async with anyio.create_task_group() as tg:
            for n, cid in enumerate(watched):
                tg.start_soon(_follow, clients[1 + n % 2], cid, streamed)
            with anyio.fail_after(GUARD_S):
                while True:
                    states = await _statuses(clients[1], ids)
                    if list(states.values()).count("running") >= 12:
                        break
                    await anyio.sleep(0.02)
            victim.stop(signal.SIGKILL)
            with anyio.fail_after(GUARD_S):
                while True:
                    states = await _statuses(clients[1], ids)
                    if all(s in ("finished", "paused") for s in states.values()):
                        break
                    await anyio.sleep(0.1)
            # The streams end at their runs' last statuses, or fail the test.
            tg.cancel_scope.deadline = anyio.current_time() + GUARD_S
        logs = {cid: await _events(clients[2], cid) for cid in ids}
    finally:
        for client in clients:
            await client.aclose()

    taken_over = 0
    for cid, events in logs.items():
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        leases = [
            (e["data"]["lease"]["fence"], e["data"]["lease"]["owner"])
            for e in events
            if e["kind"] == "status" and "lease" in e["data"]
        ]
        fences = [fence for fence, _ in leases]
        # One owner per fencing number, and the numbers only grow: no write of
        # an earlier owner came after a later one took over.
        assert fences == sorted(fences), cid
        assert len(dict(leases)) == len(set(leases)), cid
        final = events[-1]["data"]
        if final["status"] == "paused":
            assert final["reason"] == OWNER_LOST_IN_TOOLS, cid
            calls = {e["data"]["call_id"] for e in events if e["kind"] == "tool_call"}
            results = [e["data"]["call_id"] for e in events if e["kind"] == "tool_result"]
            assert sorted(results) == sorted(calls), cid
        else:
            assert final["status"] == "finished", cid
        if {"status": "queued", "reason": OWNER_LOST} in [e["data"] for e in events]:
            taken_over += 1
            assert len(set(fences)) >= 2, cid
    assert (
        taken_over
        + sum(
            1 for events in logs.values() if events[-1]["data"].get("reason") == OWNER_LOST_IN_TOOLS
        )
        > 0
    )
    assert set(streamed) == set(watched)
    for cid, events in streamed.items():
        assert events == logs[cid][: len(events)], cid
        assert events[-1] == logs[cid][-1], cid


async def test_an_api_and_a_worker_split_the_work_and_list_each_other(
    anyio_backend: str, pg_url: str
) -> None:
    with (
        running_server(anyio_backend, ["--db", pg_url, "--role", "api"]) as api,
        running_server(anyio_backend, ["--db", pg_url, "--role", "worker"]) as worker,
    ):
        async with (
            httpx.AsyncClient(base_url=api.base_url, timeout=GUARD_S) as client,
            httpx.AsyncClient(base_url=worker.base_url, timeout=GUARD_S) as direct,
        ):
            body = {"agent": {"kind": "sim", "config": {"steps": 3}}, "initial_message": "go"}
            conv = (await client.post(C, json=body)).json()
            with anyio.fail_after(GUARD_S):
                while (await client.get(f"{C}/{conv['id']}")).json()["status"] != "finished":
                    await anyio.sleep(0.02)
            listed = (await client.get("/api/instances")).json()["items"]
            assert sorted(i["role"] for i in listed) == ["api", "worker"]
            [worker_row] = [i for i in listed if i["role"] == "worker"]
            assert set(worker_row["lanes"]) == {"run", "tool", "io"}
            shown = cli("instances", "--url", api.base_url, "--json")
            assert shown.status == 0, shown.stderr
            ids = {i["id"] for i in json.loads(shown.stdout)["items"]}
            assert ids == {i["id"] for i in listed}
            for path in ("/health", "/ready", "/metrics"):
                assert (await direct.get(path)).status_code == 200
            for path in (C, "/api/instances", "/openapi.json", "/ui"):
                assert (await direct.get(path)).status_code == 404
