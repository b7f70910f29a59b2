"""``GET /api/lanes/stream`` in-process: a snapshot at once, then one a second,
each what ``GET /api/lanes`` answers; the key it needs; its place in the
OpenAPI document; and its end when the server drains."""

from __future__ import annotations

import json

import anyio
import pytest

from tests.apiclient import api_client, service, sse_stream
from tests.test_api import GUARD_S, assert_error

pytestmark = pytest.mark.anyio

PATH = "/api/lanes/stream"


async def test_a_snapshot_at_once_then_one_a_second_shaped_as_the_lanes_view() -> None:
    async with api_client() as client:
        view = (await client.get("/api/lanes")).json()
        async with sse_stream(client, PATH) as stream:
            with anyio.fail_after(GUARD_S):
                first = json.loads((await stream.frame())["data"])
                started = anyio.current_time()
                await client.put("/api/lanes/tool", json={"size": 3})
                second = json.loads((await stream.frame())["data"])
                third = json.loads((await stream.frame())["data"])
                two_intervals = anyio.current_time() - started
    assert set(first) == set(view) == {"mode", "lanes"}
    assert first["mode"] == view["mode"]
    assert set(first["lanes"]) == set(view["lanes"]) == {"run", "tool", "io"}
    for name, lane in first["lanes"].items():
        assert set(lane) == set(view["lanes"][name])
        assert set(lane["wait_time"]) == set(view["lanes"][name]["wait_time"])
    assert first["lanes"]["tool"]["size"] == view["lanes"]["tool"]["size"]
    assert second["lanes"]["tool"]["size"] == third["lanes"]["tool"]["size"] == 3
    # One a second: not faster (the lower bound leaves room for a late first
    # read), and the upper bound only a guard.
    assert 1.5 <= two_intervals < GUARD_S


async def test_the_stream_needs_the_key_when_keys_are_configured() -> None:
    async with api_client(api_keys=["k1"]) as client:
        assert_error(await client.get(PATH), 401, "unauthorized")
        assert_error(await client.get(PATH, headers={"Authorization": "Bearer no"}), 401,
                     "unauthorized")  # fmt: skip
        async with sse_stream(client, PATH, headers={"X-Session-API-Key": "k1"}) as stream:
            with anyio.fail_after(GUARD_S):
                assert "lanes" in json.loads((await stream.frame())["data"])


async def test_the_stream_ends_when_the_server_drains() -> None:
    async with api_client() as client, sse_stream(client, PATH) as stream:
        with anyio.fail_after(GUARD_S):
            await stream.frame()
            service(client).drain()
            with pytest.raises(anyio.EndOfStream):
                await stream.frame()


async def test_the_openapi_document_declares_the_stream_and_its_key() -> None:
    async with api_client() as client:
        doc = (await client.get("/openapi.json")).json()
        stream = doc["paths"][PATH]["get"]
        assert "text/event-stream" in stream["responses"]["200"]["content"]
        assert "401" not in stream["responses"]
    async with api_client(api_keys=["k1"]) as client:
        doc = (await client.get("/openapi.json", headers={"X-Session-API-Key": "k1"})).json()
        stream = doc["paths"][PATH]["get"]
        assert "401" in stream["responses"]
        assert stream["security"] != []
