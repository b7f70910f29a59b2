"""Input at the edges of what the API accepts: deep JSON, integral floats, null
query values, timestamps, methods, ids and the head size; each answered with
a clear 4xx in the usual error shape, and nothing lost."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from laneway.api.encoding import MAX_JSON_DEPTH
from laneway.api.routing import MAX_ID_LENGTH
from tests.apiclient import api_client
from tests.test_api import C, assert_error

pytestmark = pytest.mark.anyio

DEPTHS = [MAX_JSON_DEPTH + 1, 1_000, 10_000, 100_000]


def nested(depth: int, inner: bytes = b"1") -> bytes:
    return b"[" * (depth - 1) + inner + b"]" * (depth - 1)


async def test_json_nested_too_deep_is_a_400_on_every_body_route() -> None:
    async with api_client() as client:
        conv = (await client.post(C, json={})).json()
        for depth in DEPTHS:
            deep = nested(depth, b"{}")
            bodies = [
                ("POST", C, b'{"agent": {"kind": "echo", "config": {"x": ' + deep + b"}}}"),
                ("POST", C, deep),
                ("POST", f"{C}/{conv['id']}/messages", b'{"content": ' + deep + b"}"),
                ("PUT", "/api/lanes/run", b'{"size": ' + deep + b"}"),
            ]
            for method, path, body in bodies:
                response = await client.request(method, path, content=body)
                error = assert_error(response, 400, "bad_request")
                assert f"deeper than {MAX_JSON_DEPTH}" in error["message"]
        # Nothing was created, and the lane kept its size.
        assert (await client.get(f"{C}/count")).json() == {"count": 1}
        assert (await client.get("/api/lanes")).json()["lanes"]["run"]["size"] == 10


async def test_json_at_the_depth_limit_is_accepted() -> None:
    async with api_client() as client:
        config = nested(MAX_JSON_DEPTH - 3, b"{}")  # under three levels of the body
        body = b'{"agent": {"kind": "sim", "config": {"steps": ' + config + b"}}}"
        # Deep enough to pass the bound, so it reaches sim, which refuses its value.
        assert_error(await client.post(C, content=body), 422, "validation_error")


async def test_integral_floats_are_integers() -> None:
    async with api_client() as client:
        created = await client.post(C, json={"max_steps": 5.0})
        assert created.status_code == 201, created.text
        assert created.json()["max_steps"] == 5
        assert_error(await client.post(C, json={"max_steps": 5.5}), 422, "validation_error")
        resized = await client.put("/api/lanes/tool", json={"size": 3.0})
        assert resized.status_code == 200, resized.text
        assert resized.json()["size"] == 3
        assert_error(
            await client.put("/api/lanes/tool", json={"size": 1e300}), 422, "validation_error"
        )
        # Strings are still not numbers.
        assert_error(await client.post(C, json={"max_steps": "5"}), 422, "validation_error")


@pytest.mark.parametrize(
    "path",
    [
        C + "?status=null",
        C + "/count?status=null",
        C + "/{id}/events?kind=null",
        C + "/{id}/events?source=null",
        C + "/{id}/events?after_seq=null",
        C + "/{id}/events/count?before_seq=null",
        C + "/{id}/events?cursor=null",
    ],
)
async def test_null_in_a_query_is_a_422_not_no_filter(path: str) -> None:
    async with api_client() as client:
        conv = (await client.post(C, json={"initial_message": "hi", "run": False})).json()
        assert_error(await client.get(path.format(id=conv["id"])), 422, "validation_error")


async def test_text_null_searches_for_the_word() -> None:
    async with api_client() as client:
        conv = await client.post(C, json={"initial_message": "null and void", "run": False})
        cid = conv.json()["id"]
        found = (await client.get(f"{C}/{cid}/events", params={"text": "null"})).json()
        assert [e["data"]["text"] for e in found["items"]] == ["null and void"]


@pytest.mark.parametrize(
    "since",
    [
        "2024-01-01T00:00:00Z",
        "2024-01-01t00:00:00z",
        "2024-01-01T01:30:00+01:30",
        "2024-01-01T00:00:00-00:00",
        "2024-01-01T00:00:00.123456789Z",
        "2016-12-31T23:59:60Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
    ],
)
async def test_rfc3339_with_an_offset_is_accepted(since: str) -> None:
    async with api_client() as client:
        cid = (await client.post(C, json={"initial_message": "x", "run": False})).json()["id"]
        response = await client.get(f"{C}/{cid}/events", params={"since": since})
        assert response.status_code == 200, response.text
        counted = await client.get(f"{C}/{cid}/events/count", params={"until": since})
        assert counted.status_code == 200, counted.text


@pytest.mark.parametrize(
    "since",
    [
        "-1",
        "1700000000",
        "2024-01-01T00:00:00",
        "2024-01-01 00:00:00Z",
        "2024-01-01",
        "2024-02-30T00:00:00Z",
        "2024-01-01T25:00:00Z",
        "2024-01-01T00:00:00+24:00",
        "2024-01-01T00:00:00+01:60",
        "",
    ],
)
async def test_other_timestamps_are_a_422(since: str) -> None:
    async with api_client() as client:
        cid = (await client.post(C, json={})).json()["id"]
        for route in ("events", "events/count"):
            response = await client.get(f"{C}/{cid}/{route}", params={"since": since})
            assert_error(response, 422, "validation_error")


async def test_the_schema_says_date_time() -> None:
    async with api_client() as client:
        doc = (await client.get("/openapi.json")).json()
        params = doc["paths"][C + "/{id}/events"]["get"]["parameters"]
        for param in params:
            if param["name"] in ("since", "until"):
                assert param["schema"]["format"] == "date-time"
                assert param["schema"]["type"] == "string"


def allowed(response: httpx.Response) -> set[str]:
    return {m.strip() for m in response.headers["allow"].split(",")}


async def test_405_lists_every_method_of_the_path() -> None:
    async with api_client() as client:
        cid = (await client.post(C, json={})).json()["id"]
        cases: list[tuple[str, str, set[str]]] = [
            ("PUT", C, {"GET", "HEAD", "POST"}),
            ("PATCH", f"{C}/{cid}", {"GET", "HEAD", "DELETE"}),
            ("GET", f"{C}/{cid}/run", {"POST"}),
            ("DELETE", "/api/lanes/io", {"PUT"}),
        ]
        for method, path, methods in cases:
            response = await client.request(method, path)
            assert_error(response, 405, "method_not_allowed")
            assert allowed(response) == methods, path
        # Every method of a shared path still reaches its own endpoint.
        assert (await client.head(f"{C}/{cid}")).status_code == 200
        assert (await client.delete(f"{C}/{cid}")).status_code == 204


async def test_ids_are_bounded_and_never_echoed_long() -> None:
    async with api_client() as client:
        longest = "a" * MAX_ID_LENGTH
        error = assert_error(await client.get(f"{C}/{longest}"), 404, "not_found")
        assert longest in error["message"]
        for length in (MAX_ID_LENGTH + 1, 10_000):
            bad = "b" * length
            for path in (f"{C}/{bad}", f"{C}/{bad}/events", f"{C}/{bad}/events/1"):
                response = await client.get(path)
                error = assert_error(response, 404, "not_found")
                assert len(response.content) < 200
        doc = (await client.get("/openapi.json")).json()
        [param] = doc["paths"][C + "/{id}"]["get"]["parameters"]
        assert param["schema"]["maxLength"] == MAX_ID_LENGTH


async def test_a_head_over_the_limit_is_a_431() -> None:
    async with api_client(max_header_bytes=4096) as client:
        response = await client.get(C, headers={"X-Big": "x" * 4096})
        error = assert_error(response, 431, "request_head_too_large")
        assert "4096" in error["message"]
        assert_error(await client.get(C + "/" + "c" * 4096), 431, "request_head_too_large")
        assert (await client.get(C, headers={"X-Big": "x" * 3000})).status_code == 200


async def test_openapi_declares_auth_only_with_keys() -> None:
    async def operation(**settings: Any) -> dict[str, Any]:
        async with api_client(**settings) as client:
            headers = {"X-Session-API-Key": "k"}
            doc: dict[str, Any] = (await client.get("/openapi.json", headers=headers)).json()
            found: dict[str, Any] = doc["paths"][C]["get"]
            return found

    open_op = await operation()
    assert open_op["security"] == []
    assert "401" not in open_op["responses"]
    keyed = await operation(api_keys=["k"])
    assert keyed["security"] != []
    assert "401" in keyed["responses"]


async def test_a_title_with_a_nul_is_a_422_and_a_message_with_one_is_kept() -> None:
    async with api_client() as client:
        refused = await client.post(C, json={"title": "a\x00b"})
        assert_error(refused, 422, "validation_error")
        assert "title" in refused.json()["error"]["message"]
        assert (await client.get(C)).json()["items"] == []
        # Message text goes into the event's JSON, which escapes it.
        created = await client.post(C, json={"initial_message": "a\x00b", "run": False})
        assert created.status_code == 201
        events = (await client.get(f"{C}/{created.json()['id']}/events")).json()["items"]
        assert events[-1]["data"]["text"] == "a\x00b"
