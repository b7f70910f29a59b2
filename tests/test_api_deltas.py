"""``?deltas=true`` on the event stream, in-process over SSE and WebSocket: delta
frames among the events, before the message that ends their step; streams
without it exactly as before; resuming by seq; and the parameter refused when
it is neither true nor false."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from httpx_ws import WebSocketDisconnect, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport

from tests.apiclient import SSEStream, api_client, sse_stream
from tests.test_api import GUARD_S, assert_error

pytestmark = pytest.mark.anyio

C = "/api/conversations"
SIM = {"kind": "sim", "config": {"steps": 2, "think_ms": 40, "deltas": 4}}


def as_messages(frames: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    """SSE frames as what a WebSocket sends for them."""
    return [
        {"type": "delta", **json.loads(f["data"])} if f.get("event") == "delta" else
        json.loads(f["data"])
        for f in frames
    ]  # fmt: skip


def check_deltas(messages: Sequence[dict[str, Any]], cid: str, steps: Sequence[int]) -> None:
    """Each step's deltas come together, in order, right before the agent
    message that ends the step, and add up to its text."""
    pending: list[dict[str, Any]] = []
    seen: list[int] = []
    for message in messages:
        if message.get("type") == "delta":
            assert set(message) == {"type", "conversation_id", "step", "text"}
            assert message["conversation_id"] == cid
            pending.append(message)
        elif message["kind"] == "message" and message["source"] == "agent":
            assert pending, message
            assert {d["step"] for d in pending} == {pending[0]["step"]}
            assert "".join(d["text"] for d in pending) == message["data"]["text"]
            seen.append(pending[0]["step"])
            pending = []
        else:
            assert not pending, message  # no event between a step's deltas and its message
    assert seen == list(steps)


def events_only(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("type") != "delta"]


def finished(message: dict[str, Any]) -> bool:
    return message.get("kind") == "status" and message["data"]["status"] == "finished"


async def stored(client: httpx.AsyncClient, cid: str) -> list[dict[str, Any]]:
    page = (await client.get(f"{C}/{cid}/events", params={"limit": 500})).json()
    items: list[dict[str, Any]] = page["items"]
    return items


async def read_until_finished(stream: SSEStream, frames: list[dict[str, str]]) -> None:
    while not frames or not finished(json.loads(frames[-1]["data"])):
        frames.append(await stream.frame())


async def test_sse_sends_deltas_only_to_those_that_ask() -> None:
    async with api_client() as client:
        cid = (await client.post(C, json={"agent": SIM})).json()["id"]
        url = f"{C}/{cid}/events/stream"
        got: dict[str, list[dict[str, str]]] = {}
        async with (
            sse_stream(client, url, "deltas=true") as with_deltas,
            sse_stream(client, url) as plain,
            sse_stream(client, url, "deltas=false") as off,
        ):
            streams = {"deltas": with_deltas, "plain": plain, "off": off}
            with anyio.fail_after(GUARD_S):
                for name, stream in streams.items():
                    got[name] = [await stream.frame()]  # replayed: it follows live now
                await client.post(f"{C}/{cid}/messages", json={"content": "go"})
                async with anyio.create_task_group() as tg:
                    for name, stream in streams.items():
                        tg.start_soon(read_until_finished, stream, got[name])
        events = await stored(client, cid)
        for frame in got["deltas"]:
            # Deltas have no id, so Last-Event-ID stays the last event's seq.
            assert ("id" in frame) != (frame.get("event") == "delta"), frame
            if "id" in frame:
                assert set(frame) == {"id", "data"}
                assert int(frame["id"]) == json.loads(frame["data"])["seq"]
        check_deltas(as_messages(got["deltas"]), cid, [1, 2])
        assert events_only(as_messages(got["deltas"])) == events
        # Without deltas, or with deltas=false: the events alone, as ever.
        for name in ("plain", "off"):
            assert [set(f) for f in got[name]] == [{"id", "data"}] * len(events)
            assert as_messages(got[name]) == events


async def test_sse_with_deltas_resumes_by_seq() -> None:
    async with api_client() as client:
        body = {"agent": SIM, "initial_message": "first", "wait": True}
        cid = (await client.post(C, json=body)).json()["conversation"]["id"]
        before = len(await stored(client, cid))
        url = f"{C}/{cid}/events/stream"
        async with sse_stream(client, url, "deltas=true", {"Last-Event-ID": "2"}) as stream:
            with anyio.fail_after(GUARD_S):
                # The first run's events after seq 2, replayed (without deltas).
                replayed = [await stream.frame() for _ in range(before - 2)]
                await client.post(f"{C}/{cid}/messages", json={"content": "again"})
                live: list[dict[str, str]] = []
                await read_until_finished(stream, live)
        assert [json.loads(f["data"])["seq"] for f in replayed] == list(range(3, before + 1))
        assert events_only(as_messages(replayed + live)) == (await stored(client, cid))[2:]
        # The next run's step, live, with its deltas.
        check_deltas(as_messages(live), cid, [3])


@asynccontextmanager
async def ws_client(client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """A client for one WebSocket at a time to the app of ``client``: the
    transport keeps the scope of the connection it opens last for them all."""
    transport = ASGIWebSocketTransport(app=client.app)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as ws:
        yield ws


async def test_websocket_sends_deltas_only_to_those_that_ask() -> None:
    async with api_client() as client:
        cid = (await client.post(C, json={"agent": SIM})).json()["id"]
        url = f"{C}/{cid}/events/stream"
        got: dict[str, list[dict[str, Any]]] = {"deltas": [], "plain": []}
        replayed = {name: anyio.Event() for name in got}

        async def follow(name: str, query: str) -> None:
            async with ws_client(client) as wsc, aconnect_ws(url + query, wsc) as ws:
                got[name].append(json.loads(await ws.receive_text()))
                replayed[name].set()  # so it follows live now
                while not finished(got[name][-1]):
                    got[name].append(json.loads(await ws.receive_text()))

        with anyio.fail_after(GUARD_S):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow, "deltas", "?deltas=true")
                tg.start_soon(follow, "plain", "")
                for event in replayed.values():
                    await event.wait()
                await client.post(f"{C}/{cid}/messages", json={"content": "go"})
        events = await stored(client, cid)
        check_deltas(got["deltas"], cid, [1, 2])
        assert events_only(got["deltas"]) == events
        assert got["plain"] == events


async def test_a_deltas_value_other_than_true_or_false_is_refused() -> None:
    async with api_client() as client, ws_client(client) as wsc:
        cid = (await client.post(C, json={})).json()["id"]
        url = f"{C}/{cid}/events/stream"
        for value in ("yes", "1", "True", ""):
            response = await client.get(url, params={"deltas": value})
            assert "deltas" in assert_error(response, 422, "validation_error")["message"]
        closed: list[WebSocketDisconnect] = []
        with anyio.fail_after(GUARD_S):
            try:
                async with aconnect_ws(url + "?deltas=yes", wsc) as ws:
                    await ws.receive_text()
            except* WebSocketDisconnect as group:
                closed += group.exceptions  # type: ignore[arg-type]
        assert [(c.code, "deltas" in c.reason) for c in closed] == [(1008, True)]


async def test_the_openapi_document_describes_deltas() -> None:
    async with api_client() as client:
        doc = (await client.get("/openapi.json")).json()
        stream = doc["paths"][C + "/{id}/events/stream"]["get"]
        [param] = [p for p in stream["parameters"] if p["name"] == "deltas"]
        assert param["in"] == "query"
        assert not param["required"]
        assert sorted(param["schema"]["enum"]) == ["false", "true"]
        assert param["schema"]["default"] == "false"
        assert "event: delta" in param["schema"]["description"]
