"""Waiting for a run over HTTP: ``"wait": true`` on a create or a message, and
``GET /api/conversations/{id}/wait``."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import httpx
import pytest
from starlette.types import Message

from laneway import waiting
from tests import agents
from tests.apiclient import api_client, service
from tests.test_api import GUARD_S, C

pytestmark = pytest.mark.anyio

WAIT_FIELDS = {"conversation", "events", "next_cursor"}


class Gate:
    def __init__(self) -> None:
        name = uuid.uuid4().hex
        self.spec = {"kind": "tests.agents:make_gate", "config": {"gate": name}}
        self.gate = agents.gate(name)
        self.entered = agents.gate(name + ":entered")

    async def create(self, client: httpx.AsyncClient, **body: Any) -> str:
        """A conversation whose run is held inside its first step."""
        created = await client.post(C, json={"agent": self.spec, "initial_message": "a", **body})
        assert await anyio.to_thread.run_sync(self.entered.wait, GUARD_S)
        cid: str = created.json()["id"]
        return cid


def waited(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == WAIT_FIELDS
    return body


def statuses(body: dict[str, Any]) -> list[str]:
    return [e["data"]["status"] for e in body["events"] if e["kind"] == "status"]


def seqs(body: dict[str, Any]) -> list[int]:
    return [e["seq"] for e in body["events"]]


async def test_create_with_wait_answers_201_once_the_run_has_ended() -> None:
    async with api_client() as client:
        response = await client.post(C, json={"initial_message": "hi", "wait": True})
        body = waited(response, 201)
        conv = body["conversation"]
        assert response.headers["location"] == f"{C}/{conv['id']}"
        assert conv["status"] == "finished"
        assert seqs(body) == list(range(1, len(body["events"]) + 1))
        assert statuses(body) == ["idle", "queued", "running", "finished"]
        assert body["next_cursor"] is None
        # With no run to wait for, at once.
        idle = waited(await client.post(C, json={"title": "t", "wait": True}), 201)
        assert idle["conversation"]["status"] == "idle"
        assert statuses(idle) == ["idle"]


async def test_message_with_wait_answers_200_from_the_message_on() -> None:
    async with api_client() as client:
        cid = (await client.post(C, json={})).json()["id"]
        url = f"{C}/{cid}/messages"
        body = waited(await client.post(url, json={"content": "hi", "wait": True}), 200)
        assert body["events"][0]["seq"] == 2
        assert body["events"][0]["data"] == {"text": "hi"}
        assert statuses(body) == ["queued", "running", "finished"]
        assert body["conversation"]["status"] == "finished"
        # run=false starts or joins nothing: the answer is at once, the message alone.
        kept = await client.post(url, json={"content": "later", "run": False, "wait": True})
        assert [e["data"] for e in waited(kept, 200)["events"]] == [{"text": "later"}]
        # Without wait, the answer is as before.
        plain = await client.post(url, json={"content": "plain"})
        assert plain.status_code == 202
        assert set(plain.json()) == {"event", "conversation"}


async def test_get_wait_answers_at_once_without_a_run_and_filters_by_after_seq() -> None:
    async with api_client() as client:
        created = await client.post(C, json={"initial_message": "hi", "wait": True})
        cid = waited(created, 201)["conversation"]["id"]
        total = len(created.json()["events"])
        everything = waited(await client.get(f"{C}/{cid}/wait"), 200)
        assert seqs(everything) == list(range(1, total + 1))
        after = waited(await client.get(f"{C}/{cid}/wait", params={"after_seq": 3}), 200)
        assert seqs(after) == list(range(4, total + 1))
        past = waited(await client.get(f"{C}/{cid}/wait", params={"after_seq": 99}), 200)
        assert past["events"] == []


async def test_past_the_timeout_the_answer_is_202_and_the_run_goes_on() -> None:
    async with api_client() as client:
        gate = Gate()
        try:
            cid = await gate.create(client)
            url = f"{C}/{cid}/wait"
            early = waited(await client.get(url, params={"timeout_s": 0.01}), 202)
            assert early["conversation"]["status"] == "running"
            assert statuses(early) == ["idle", "queued", "running"]
            sent = await client.post(
                f"{C}/{cid}/messages", json={"content": "b", "wait": True, "wait_timeout_s": 0.01}
            )
            assert waited(sent, 202)["events"][0]["data"] == {"text": "b"}
            body = {
                "agent": gate.spec,
                "initial_message": "c",
                "wait": True,
                "wait_timeout_s": 0.01,
            }
            created = await client.post(C, json=body)
            assert created.headers["location"].startswith(C + "/")
            assert waited(created, 202)["conversation"]["status"] in ("queued", "running")
        finally:
            gate.gate.set()
        done = waited(await client.get(url, params={"timeout_s": GUARD_S}), 200)
        assert done["conversation"]["status"] == "finished"
        replies = [e["data"]["text"] for e in done["events"] if e["source"] == "agent"]
        assert replies == ["a", "b"]


async def test_a_client_that_goes_away_does_not_disturb_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waiting_now = anyio.Event()
    until_ended = waiting.RunWait.until_ended

    async def noted(self: waiting.RunWait, timeout_s: float) -> bool:
        waiting_now.set()
        return await until_ended(self, timeout_s)

    monkeypatch.setattr(waiting.RunWait, "until_ended", noted)
    async with api_client() as client:
        gate = Gate()
        try:
            cid = await gate.create(client)
            url = f"{C}/{cid}/messages"
            # Through httpx's ASGI transport the app runs in the client's task:
            # the client giving up cancels the request mid-wait.
            with anyio.fail_after(GUARD_S):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(lambda: client.post(url, json={"content": "b", "wait": True}))
                    await waiting_now.wait()
                    tg.cancel_scope.cancel()
            conv = (await client.get(f"{C}/{cid}")).json()
            assert conv["status"] == "running"
            assert conv["pause_requested"] is False
        finally:
            gate.gate.set()
        done = waited(await client.get(f"{C}/{cid}/wait", params={"timeout_s": GUARD_S}), 200)
        assert done["conversation"]["status"] == "finished"
        # The message whose sender went away was still read, by the same run.
        replies = [e["data"]["text"] for e in done["events"] if e["source"] == "agent"]
        assert replies == ["a", "b"]
        assert statuses(done).count("running") == 1


async def test_a_wait_ends_when_the_client_disconnects() -> None:
    async with api_client() as client:
        gate = Gate()
        try:
            cid = await gate.create(client)
            disconnect = anyio.Event()
            sent: list[Message] = []
            first = True

            async def receive() -> Message:
                nonlocal first
                if first:
                    first = False
                    return {"type": "http.request", "body": b"", "more_body": False}
                await disconnect.wait()
                return {"type": "http.disconnect"}

            async def send(message: Message) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": f"{C}/{cid}/wait",
                "raw_path": f"{C}/{cid}/wait".encode(),
                "query_string": b"timeout_s=600",
                "root_path": "",
                "headers": [(b"host", b"127.0.0.1")],
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 80),
            }
            with anyio.fail_after(GUARD_S):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client.app, scope, receive, send)  # type: ignore[attr-defined]
                    await anyio.wait_all_tasks_blocked()
                    disconnect.set()
            # The request has ended, with nothing sent to the client gone.
            assert sent == []
            assert (await client.get(f"{C}/{cid}")).json()["status"] == "running"
        finally:
            gate.gate.set()
        done = waited(await client.get(f"{C}/{cid}/wait", params={"timeout_s": GUARD_S}), 200)
        assert done["conversation"]["status"] == "finished"


async def test_a_run_refused_answers_429_not_a_wait() -> None:
    async with api_client(run_lane_size=1, run_max_waiting=1) as client:
        gate = Gate()
        try:
            await gate.create(client)
            queued = await client.post(C, json={"initial_message": "b"})
            assert queued.json()["status"] == "queued"
            cid = (await client.post(C, json={})).json()["id"]
            refused = await client.post(f"{C}/{cid}/messages", json={"content": "k", "wait": True})
            assert refused.status_code == 429
            assert refused.json()["error"]["event"]["data"] == {"text": "k"}
            created = await client.post(C, json={"initial_message": "n", "wait": True})
            assert created.status_code == 429
            assert created.json()["error"]["conversation"]["status"] == "idle"
        finally:
            gate.gate.set()


async def test_the_answer_holds_at_most_500_events_and_pages_on() -> None:
    async with api_client() as client:
        agent = {"kind": "sim", "config": {"steps": 150, "tools_per_step": 2}}
        body = {"agent": agent, "initial_message": "go", "max_steps": 150, "wait": True}
        created = await client.post(C, json=body, timeout=GUARD_S)
        first = waited(created, 201)
        cid = first["conversation"]["id"]
        assert first["conversation"]["status"] == "finished"
        assert seqs(first) == list(range(1, 501))
        rest = await client.get(f"{C}/{cid}/events", params={"cursor": first["next_cursor"]})
        items = rest.json()["items"]
        total = (await client.get(f"{C}/{cid}/events/count")).json()["count"]
        assert total > 500
        assert [e["seq"] for e in items] == list(range(501, min(total, 550) + 1))


async def test_unknown_conversation_is_404() -> None:
    async with api_client() as client:
        missing = f"{C}/{uuid.uuid4().hex}"
        for response in [
            await client.get(missing + "/wait"),
            await client.post(missing + "/messages", json={"content": "x", "wait": True}),
        ]:
            assert response.status_code == 404, response.text
            assert response.json()["error"]["code"] == "not_found"


async def test_timeouts_out_of_range_or_of_the_wrong_type_are_422_naming_the_field() -> None:
    async with api_client() as client:
        cid = (await client.post(C, json={})).json()["id"]
        bodies = [
            {"wait_timeout_s": 0},
            {"wait_timeout_s": -1},
            {"wait_timeout_s": 600.5},
            {"wait_timeout_s": "5"},
            {"wait_timeout_s": True},
            {"wait_timeout_s": None},
            {"wait": "yes"},
        ]
        for extra in bodies:
            [field] = extra
            for url, body in [
                (f"{C}/{cid}/messages", {"content": "x", "wait": True, **extra}),
                (C, {"wait": True, **extra}),
            ]:
                response = await client.post(url, json=body)
                assert response.status_code == 422, (url, body, response.text)
                assert field in response.json()["error"]["message"], body
        for params in [
            {"timeout_s": "0"},
            {"timeout_s": "601"},
            {"timeout_s": "abc"},
            {"timeout_s": "nan"},
            {"timeout_s": "inf"},
            {"after_seq": "-1"},
            {"after_seq": "x"},
        ]:
            response = await client.get(f"{C}/{cid}/wait", params=params)
            assert response.status_code == 422, (params, response.text)
            [field] = params
            assert field in response.json()["error"]["message"], params
        # Nothing was created or stored by the refused requests.
        assert (await client.get(f"{C}/count")).json() == {"count": 1}
        assert (await client.get(f"{C}/{cid}/events/count")).json() == {"count": 1}
        assert service(client).runs.handles == {}


async def test_openapi_documents_the_wait() -> None:
    async with api_client(api_keys=["k"]) as client:
        headers = {"X-Session-API-Key": "k"}
        doc = (await client.get("/openapi.json")).json()
        op = doc["paths"][C + "/{id}/wait"]["get"]
        params = {p["name"]: p for p in op["parameters"]}
        assert set(params) == {"id", "timeout_s", "after_seq"}
        assert params["timeout_s"]["schema"]["exclusiveMinimum"] == 0
        assert params["timeout_s"]["schema"]["maximum"] == 600
        assert {"200", "202", "401", "404", "422"} <= set(op["responses"])
        assert op["security"]
        result = {"$ref": "#/components/schemas/WaitResult"}
        assert op["responses"]["202"]["content"]["application/json"]["schema"] == result
        schemas = doc["components"]["schemas"]
        assert set(schemas["WaitResult"]["required"]) == WAIT_FIELDS
        assert "500" in schemas["WaitResult"]["description"]
        for body in ("SendMessage", "CreateConversation"):
            assert {"wait", "wait_timeout_s"} <= set(schemas[body]["properties"])
        sent = doc["paths"][C + "/{id}/messages"]["post"]["responses"]
        assert result in sent["202"]["content"]["application/json"]["schema"]["anyOf"]
        assert sent["200"]["content"]["application/json"]["schema"] == result
        created = doc["paths"][C]["post"]["responses"]
        assert result in created["201"]["content"]["application/json"]["schema"]["anyOf"]
        assert created["202"]["content"]["application/json"]["schema"] == result
        # The route asks for the key like every other /api route.
        cid = (await client.post(C, json={}, headers=headers)).json()["id"]
        assert (await client.get(f"{C}/{cid}/wait")).status_code == 401
        assert (await client.get(f"{C}/{cid}/wait", headers=headers)).status_code == 200
