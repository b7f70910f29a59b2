from __future__ import annotations

import base64
import uuid
from typing import Any

import anyio
import httpx
import pytest

from tests import agents
from tests.apiclient import api_client, service
from tests.lanes_held import lane_held

pytestmark = pytest.mark.anyio

GUARD_S = 15
C = "/api/conversations"


async def wait_status(client: httpx.AsyncClient, cid: str, *statuses: str) -> dict[str, Any]:
    with anyio.fail_after(GUARD_S):
        while True:
            body: dict[str, Any] = (await client.get(f"{C}/{cid}")).json()
            if body["status"] in statuses:
                return body
            await anyio.sleep(0.005)


def gate_agent() -> tuple[dict[str, Any], Any]:
    name = uuid.uuid4().hex
    return {"kind": "tests.agents:make_gate", "config": {"gate": name}}, agents.gate(name)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


CONVERSATION_FIELDS = {
    "id",
    "title",
    "status",
    "agent",
    "created_at",
    "updated_at",
    "steps_done",
    "queue_position",
    "pause_requested",
    "last_error",
    "max_steps",
    "usage",
}
EVENT_FIELDS = {"seq", "id", "conversation_id", "timestamp", "kind", "source", "data"}


async def test_health_and_ready() -> None:
    async with api_client() as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        assert (await client.get("/ready")).status_code == 200


async def test_conversation_lifecycle() -> None:
    async with api_client() as client:
        created = await client.post(C, json={"title": "t", "initial_message": "hi"})
        assert created.status_code == 201
        conv = created.json()
        assert set(conv) == CONVERSATION_FIELDS
        assert conv["status"] in ("queued", "running")
        assert conv["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
        assert created.headers["location"] == f"{C}/{conv['id']}"
        done = await wait_status(client, conv["id"], "finished")
        assert done["steps_done"] == 1

        sent = await client.post(f"{C}/{conv['id']}/messages", json={"content": "again"})
        assert sent.status_code == 202
        body = sent.json()
        assert set(body["event"]) == EVENT_FIELDS
        assert body["event"]["data"] == {"text": "again"}
        assert body["conversation"]["id"] == conv["id"]
        await wait_status(client, conv["id"], "finished")

        events = (await client.get(f"{C}/{conv['id']}/events")).json()
        assert [e["seq"] for e in events["items"]] == list(range(1, len(events["items"]) + 1))
        assert events["next_cursor"] is None
        replies = [e["data"]["text"] for e in events["items"] if e["source"] == "agent"]
        assert replies == ["hi", "again"]

        one = await client.get(f"{C}/{conv['id']}/events/2")
        assert one.status_code == 200
        assert one.json()["seq"] == 2

        run = await client.post(f"{C}/{conv['id']}/run")
        assert run.status_code == 202
        assert run.json()["status"] in ("queued", "running")
        await wait_status(client, conv["id"], "finished")

        paused = await client.post(f"{C}/{conv['id']}/pause")
        assert paused.status_code == 200

        deleted = await client.delete(f"{C}/{conv['id']}")
        assert deleted.status_code == 204
        assert_error(await client.get(f"{C}/{conv['id']}"), 404, "not_found")


async def test_create_defaults_and_run_flag() -> None:
    async with api_client() as client:
        idle = (await client.post(C, json={})).json()
        assert idle["status"] == "idle"
        assert idle["agent"] == {"kind": "echo", "config": {}}
        kept = (await client.post(C, json={"initial_message": "x", "run": False})).json()
        assert kept["status"] == "idle"
        sim = await client.post(
            C, json={"agent": {"kind": "sim", "config": {"steps": 2}}, "run": True, "max_steps": 1}
        )
        assert sim.status_code == 201
        done = await wait_status(client, sim.json()["id"], "finished")
        assert done["steps_done"] == 1


async def test_list_count_and_pagination() -> None:
    async with api_client() as client:
        ids = [(await client.post(C, json={"title": str(i)})).json()["id"] for i in range(5)]
        first = (await client.get(C, params={"limit": 2})).json()
        assert [c["id"] for c in first["items"]] == ids[::-1][:2]
        second = (await client.get(C, params={"limit": 2, "cursor": first["next_cursor"]})).json()
        assert [c["id"] for c in second["items"]] == ids[::-1][2:4]
        assert (await client.get(f"{C}/count")).json() == {"count": 5}
        assert (await client.get(f"{C}/count", params={"status": "idle"})).json() == {"count": 5}
        assert (await client.get(C, params={"status": "finished"})).json()["items"] == []


async def test_event_search_filters_and_count() -> None:
    async with api_client() as client:
        conv = (
            await client.post(
                C,
                json={
                    "agent": {"kind": "sim", "config": {"steps": 4, "tools_per_step": 2}},
                    "initial_message": "Hello World",
                },
            )
        ).json()
        await wait_status(client, conv["id"], "finished")
        url = f"{C}/{conv['id']}/events"
        calls = (await client.get(url, params={"kind": "tool_call"})).json()["items"]
        assert len(calls) == 8
        count = (await client.get(url + "/count", params={"kind": "tool_call"})).json()
        assert count == {"count": 8}
        found = (await client.get(url, params={"text": "hello world"})).json()["items"]
        assert [e["source"] for e in found] == ["user"]
        newest = (await client.get(url, params={"order": "desc", "limit": 1})).json()
        assert newest["items"][0]["data"]["status"] == "finished"
        assert newest["next_cursor"] is not None
        rest = (
            await client.get(url, params={"order": "desc", "cursor": newest["next_cursor"]})
        ).json()["items"]
        assert rest[0]["seq"] == newest["items"][0]["seq"] - 1
        window = (await client.get(url, params={"after_seq": 2, "before_seq": 5})).json()
        assert [e["seq"] for e in window["items"]] == [3, 4]
        stamp = window["items"][0]["timestamp"]
        since = (await client.get(url, params={"since": stamp, "source": "system"})).json()
        assert all(e["timestamp"] >= stamp and e["source"] == "system" for e in since["items"])
        none = (await client.get(url, params={"until": "2000-01-01T00:00:00Z"})).json()
        assert none["items"] == []
        # Years before 1000 still compare as times: the stored form pads them.
        total = (await client.get(url + "/count")).json()["count"]
        early = {"since": "0005-01-01T00:00:00Z"}
        assert (await client.get(url + "/count", params=early)).json()["count"] == total
        # Times that leave datetime's range once in UTC are before or after all.
        for edge in [
            {"since": "0001-01-01T00:00:00+01:00"},
            {"until": "9999-12-31T23:59:59-01:00"},
        ]:
            assert (await client.get(url + "/count", params=edge)).json()["count"] == total
        for edge in [
            {"until": "0001-01-01T00:00:00+01:00"},
            {"since": "9999-12-31T23:59:59-01:00"},
        ]:
            assert (await client.get(url + "/count", params=edge)).json()["count"] == 0


async def test_a_sqlite_server_is_its_one_instance() -> None:
    async with api_client() as client:
        [only] = (await client.get("/api/instances")).json()["items"]
    assert only["id"] == "local"
    assert only["role"] == "all"
    assert set(only["lanes"]) == {"run", "tool", "io"}
    assert only["runs"] == 0


async def test_lanes_view_and_resize() -> None:
    async with api_client() as client:
        view = (await client.get("/api/lanes")).json()
        assert view["mode"] == "isolated"
        assert set(view["lanes"]) == {"run", "tool", "io"}
        for snap in view["lanes"].values():
            assert snap["admitted"] == snap["completed"] + snap["failed"] + snap["running"]
            assert len(snap["wait_time"]["bounds"]) == len(snap["wait_time"]["counts"])
        resized = await client.put("/api/lanes/run", json={"size": 3})
        assert resized.status_code == 200
        assert resized.json()["size"] == 3
        assert service(client).lanes.run.size == 3
        assert_error(await client.put("/api/lanes/gpu", json={"size": 3}), 404, "not_found")
        error = assert_error(
            await client.put("/api/lanes/run", json={"size": 0}), 422, "validation_error"
        )
        assert "$.size" in error["message"]


async def test_shared_mode_is_reported() -> None:
    async with api_client(lanes_mode="shared") as client:
        view = (await client.get("/api/lanes")).json()
        assert view["mode"] == "shared"
        assert view["lanes"]["run"]["size"] == view["lanes"]["io"]["size"] == 40


async def test_metrics_exposition() -> None:
    async with api_client() as client:
        await client.post(C, json={"initial_message": "m"})
        text = (await client.get("/metrics")).text
        for line in (
            'laneway_lane_running{lane="run"}',
            'laneway_lane_admitted_total{lane="io"}',
            'laneway_lane_rejected_total{lane="run"}',
            'laneway_lane_wait_seconds_bucket{lane="run",le="+Inf"}',
            'laneway_lane_service_seconds_count{lane="tool"}',
            'laneway_lane_oldest_wait_seconds{lane="io"}',
            'laneway_conversations{status="idle"}',
            "laneway_stream_subscribers",
        ):
            assert line in text, line


async def test_openapi_document_lists_every_route() -> None:
    async with api_client() as client:
        doc = (await client.get("/openapi.json")).json()
        assert doc["openapi"].startswith("3.1")
        paths = doc["paths"]
        assert set(paths[C]) == {"get", "post"}
        assert set(paths[C + "/{id}"]) == {"get", "delete"}
        for path in (
            C + "/count",
            C + "/{id}/messages",
            C + "/{id}/run",
            C + "/{id}/pause",
            C + "/{id}/events",
            C + "/{id}/events/count",
            C + "/{id}/events/{seq}",
            C + "/{id}/events/stream",
            "/api/lanes",
            "/api/lanes/{name}",
            "/metrics",
            "/health",
            "/ready",
        ):
            assert path in paths, path
        assert "Conversation" in doc["components"]["schemas"]
        assert "LaneSnapshot" in doc["components"]["schemas"]
        metrics = paths["/metrics"]["get"]
        assert "503" in metrics["responses"]
        assert "401" not in metrics["responses"]
        assert metrics["security"] == []


async def test_openapi_document_says_metrics_needs_a_key_when_it_does() -> None:
    async with api_client(api_keys=["k"], metrics_auth=True) as client:
        headers = {"X-Session-API-Key": "k"}
        doc = (await client.get("/openapi.json", headers=headers)).json()
        metrics = doc["paths"]["/metrics"]["get"]
        assert "401" in metrics["responses"]
        assert metrics["security"] != []


# -- every error code ---------------------------------------------------------


async def test_400_malformed_json() -> None:
    async with api_client() as client:
        response = await client.post(
            C, content=b"{not json", headers={"content-type": "application/json"}
        )
        assert_error(response, 400, "bad_request")
        assert_error(await client.post(C, content=b""), 400, "bad_request")
        # JSON is UTF-8: other bytes are malformed too, a lone surrogate included.
        for body in (b'{"title": "\xff"}', b'{"title": "\xed\xa0\x80"}', b'{"title": "\xe9"}'):
            assert_error(await client.post(C, content=body), 400, "bad_request")
        assert (await client.get(f"{C}/count")).json() == {"count": 0}


async def test_401_missing_or_wrong_key() -> None:
    async with api_client(api_keys=["k1", "k2"]) as client:
        assert_error(await client.get(C), 401, "unauthorized")
        assert_error(
            await client.get(C, headers={"X-Session-API-Key": "nope"}), 401, "unauthorized"
        )
        assert_error(
            await client.get(C, headers={"Authorization": "Bearer nope"}), 401, "unauthorized"
        )
        assert_error(
            await client.get(C, headers={"Authorization": "Basic k1"}), 401, "unauthorized"
        )
        assert (await client.get(C, headers={"X-Session-API-Key": "k2"})).status_code == 200
        assert (await client.get(C, headers={"Authorization": "Bearer k1"})).status_code == 200
        # Either header may carry the key, whatever the other holds.
        for other in ("", "nope"):
            headers = {"X-Session-API-Key": other, "Authorization": "Bearer k1"}
            assert (await client.get(C, headers=headers)).status_code == 200
        assert_error(
            await client.get(C, headers={"X-Session-API-Key": "", "Authorization": "Bearer "}),
            401,
            "unauthorized",
        )
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/ready")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
    async with api_client(api_keys=["k1"], metrics_auth=True) as client:
        assert_error(await client.get("/metrics"), 401, "unauthorized")
        assert (
            await client.get("/metrics", headers={"Authorization": "Bearer k1"})
        ).status_code == 200


async def test_404_unknown_conversation_event_and_route() -> None:
    async with api_client() as client:
        assert_error(await client.get(f"{C}/nope"), 404, "not_found")
        assert_error(await client.delete(f"{C}/nope"), 404, "not_found")
        assert_error(await client.post(f"{C}/nope/run"), 404, "not_found")
        assert_error(await client.post(f"{C}/nope/pause"), 404, "not_found")
        assert_error(
            await client.post(f"{C}/nope/messages", json={"content": "x"}), 404, "not_found"
        )
        assert_error(await client.get(f"{C}/nope/events"), 404, "not_found")
        assert_error(await client.get(f"{C}/nope/events/count"), 404, "not_found")
        assert_error(await client.get(f"{C}/nope/events/stream"), 404, "not_found")
        conv = (await client.post(C, json={})).json()
        assert_error(await client.get(f"{C}/{conv['id']}/events/99"), 404, "not_found")
        assert_error(await client.get("/no/such/route"), 404, "not_found")
        assert_error(await client.patch(C), 405, "method_not_allowed")


async def test_409_conflict_on_double_run() -> None:
    async with api_client() as client:
        spec, gate = gate_agent()
        try:
            conv = (await client.post(C, json={"agent": spec, "initial_message": "a"})).json()
            await wait_status(client, conv["id"], "running")
            assert_error(await client.post(f"{C}/{conv['id']}/run"), 409, "conflict")
        finally:
            gate.set()
        await wait_status(client, conv["id"], "finished")


async def test_413_body_over_limit() -> None:
    async with api_client(max_body_bytes=1000) as client:
        conv = (await client.post(C, json={})).json()
        big = {"content": "x" * 2000}
        assert_error(
            await client.post(f"{C}/{conv['id']}/messages", json=big), 413, "payload_too_large"
        )
        assert (
            await client.get(f"{C}/{conv['id']}/events/count", params={"kind": "message"})
        ).json() == {"count": 0}

        async def chunks() -> Any:
            for _ in range(10):
                yield b"x" * 200

        # No Content-Length: the limit holds while streaming too.
        streamed = await client.post(f"{C}/{conv['id']}/messages", content=chunks())
        assert_error(streamed, 413, "payload_too_large")


async def test_422_names_the_field() -> None:
    async with api_client() as client:
        conv = (await client.post(C, json={})).json()
        cases = [
            (client.post(f"{C}/{conv['id']}/messages", json={"content": 5}), "$.content"),
            (client.post(f"{C}/{conv['id']}/messages", json={}), "content"),
            (client.post(C, json={"max_steps": 0}), "$.max_steps"),
            (client.post(C, json={"agent": {"kind": "sim", "config": {"steps": -1}}}), "steps"),
            (client.post(C, json={"agent": {"kind": "nope"}}), "nope"),
            (client.post(C, json={"bogus": 1}), "bogus"),
            (client.get(C, params={"limit": 501}), "limit"),
            (client.get(C, params={"status": "sleeping"}), "status"),
            (client.get(C, params={"cursor": "garbage"}), "cursor"),
            (client.get(f"{C}/{conv['id']}/events", params={"kind": "x"}), "kind"),
            (client.get(f"{C}/{conv['id']}/events", params={"since": "yesterday"}), "since"),
            (client.get(f"{C}/{conv['id']}/events", params={"after_seq": "-1"}), "after_seq"),
            (client.get(f"{C}/{conv['id']}/events", params={"order": "up"}), "order"),
            (client.get(f"{C}/{conv['id']}/events/stream", params={"after_seq": "x"}), "after_seq"),
        ]
        for call, field in cases:
            error = assert_error(await call, 422, "validation_error")
            assert field in error["message"], (field, error)
        assert (await client.get(f"{C}/count")).json() == {"count": 1}


async def test_429_run_queue_full_keeps_the_message() -> None:
    async with api_client(run_lane_size=1, run_max_waiting=1) as client:
        spec, gate = gate_agent()
        try:
            a = (await client.post(C, json={"agent": spec, "initial_message": "a"})).json()
            await wait_status(client, a["id"], "running")
            b = (await client.post(C, json={"initial_message": "b"})).json()
            assert b["status"] == "queued"
            assert b["queue_position"] == 1
            c = (await client.post(C, json={})).json()
            rejected = await client.post(f"{C}/{c['id']}/messages", json={"content": "kept"})
            error = assert_error(rejected, 429, "run_queue_full")
            assert int(rejected.headers["retry-after"]) >= 1
            assert error["event"]["data"] == {"text": "kept"}
            assert error["retry_after"] > 0
            stored = (await client.get(f"{C}/{c['id']}/events", params={"kind": "message"})).json()
            assert [e["data"]["text"] for e in stored["items"]] == ["kept"]
            run = await client.post(f"{C}/{c['id']}/run")
            assert_error(run, 429, "run_queue_full")
            assert "retry-after" in run.headers
            created = await client.post(C, json={"initial_message": "new"})
            error = assert_error(created, 429, "run_queue_full")
            assert error["conversation"]["status"] == "idle"
        finally:
            gate.set()


async def test_503_io_lane_full() -> None:
    async with api_client(io_lane_size=1, io_max_waiting=0) as client:
        async with lane_held(service(client).lanes.io):
            response = await client.get(C)
            assert_error(response, 503, "lane_full")
            assert int(response.headers["retry-after"]) >= 1
        assert (await client.get(C)).status_code == 200


async def test_pause_of_queued_run_over_http() -> None:
    async with api_client(run_lane_size=1) as client:
        spec, gate = gate_agent()
        try:
            a = (await client.post(C, json={"agent": spec, "initial_message": "a"})).json()
            await wait_status(client, a["id"], "running")
            b = (await client.post(C, json={"initial_message": "b"})).json()
            paused = (await client.post(f"{C}/{b['id']}/pause")).json()
            assert paused["status"] == "paused"
            lanes = (await client.get("/api/lanes")).json()["lanes"]
            assert lanes["run"]["cancelled_waiting"] == 1
        finally:
            gate.set()


async def test_forged_cursors_are_422_not_500() -> None:
    def forge(payload: bytes) -> str:
        return base64.urlsafe_b64encode(payload).decode().rstrip("=")

    async with api_client() as client:
        conv = (await client.post(C, json={})).json()
        for cursor in (forge(b'{"r": 100000000000000000000000}'), forge(b'{"r": -1}')):
            error = assert_error(
                await client.get(C, params={"cursor": cursor}), 422, "validation_error"
            )
            assert "cursor" in error["message"]
        for cursor in (forge(b'{"s": 100000000000000000000000, "o": "asc"}'), forge(b"[]")):
            url = f"{C}/{conv['id']}/events"
            assert_error(await client.get(url, params={"cursor": cursor}), 422, "validation_error")
