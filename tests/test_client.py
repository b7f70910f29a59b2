"""laneway.client against the real server under each backend: every method, and
every error class from a real answer. Each test body runs with the sync and the
async client (tests.clients)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from laneway.client import (
    AgentSpec,
    BadRequest,
    Client,
    Conflict,
    Conversation,
    Invalid,
    LanewayError,
    MessageAccepted,
    NotFound,
    QueueFull,
    Unauthorized,
    Unavailable,
    WaitAnswer,
)
from laneway.client.errors import error_from_response
from tests.clients import KINDS, Kind, collect, done, open_client
from tests.serverproc import lazy_servers, running_server

pytestmark = pytest.mark.anyio

GUARD_S = 10.0


def sim(**config: Any) -> AgentSpec:
    return AgentSpec("sim", config)


@pytest.fixture(scope="module")
def servers() -> Iterator[Callable[[str], str]]:
    """One plain server a backend for the module, started when first asked for."""
    with lazy_servers() as url:
        yield url


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> Kind:
    return request.param  # type: ignore[no-any-return]


async def test_conversation_methods(anyio_backend: str, servers: Any, kind: Kind) -> None:
    async with open_client(kind, servers(anyio_backend), timeout_s=GUARD_S) as c:
        assert (await done(c.health())).status == "ok"
        assert (await done(c.ready())).status == "ready"
        before = await done(c.count_conversations())

        idle = await done(c.create_conversation(title="idle"))
        assert isinstance(idle, Conversation)
        assert (idle.status, idle.title) == ("idle", "idle")
        answer = await done(c.create_conversation(initial_message="hello", wait=True))
        assert isinstance(answer, WaitAnswer)
        assert not answer.timed_out
        assert answer.conversation.status == "finished"
        assert [e.data.get("text") for e in answer.events if e.kind == "message"] == ["hello"] * 2
        cid = answer.conversation.id
        assert (await done(c.get_conversation(cid))).id == cid

        accepted = await done(c.send_message(cid, "more"))
        assert isinstance(accepted, MessageAccepted)
        assert accepted.event.data == {"text": "more"}
        waited = await done(c.wait(cid, after_seq=accepted.event.seq - 1))
        assert waited.events[0] == accepted.event
        assert waited.conversation.status == "finished"
        replied = await done(c.send_message(cid, "again", wait=True, wait_timeout_s=GUARD_S))
        assert replied.events[-1].data == {"status": "finished", "reason": "agent finished"}

        # Three conversations more than before, one a page, newest first.
        assert await done(c.count_conversations()) == before + 2
        listed = await collect(c.list_conversations(page_size=1))
        assert [conv.id for conv in listed[:2]] == [cid, idle.id]
        assert len(listed) == before + 2
        assert [x.id for x in await collect(c.list_conversations(status="idle"))] == [idle.id]

        await done(c.delete_conversation(idle.id))
        with pytest.raises(NotFound) as gone:
            await done(c.get_conversation(idle.id))
        assert (gone.value.status, gone.value.code) == (404, "not_found")


async def test_event_methods(anyio_backend: str, servers: Any, kind: Kind) -> None:
    async with open_client(kind, servers(anyio_backend), timeout_s=GUARD_S) as c:
        answer = await done(
            c.create_conversation(agent=sim(steps=3), initial_message="go", wait=True)
        )
        cid = answer.conversation.id
        stored = answer.events
        assert len(stored) > 4
        assert answer.next_cursor is None

        assert await collect(c.iter_events(cid, page_size=2)) == stored
        newest = await collect(c.iter_events(cid, order="desc", page_size=3))
        assert newest == stored[::-1]
        messages = await collect(c.iter_events(cid, kind="message", source="agent"))
        assert [e.seq for e in messages] == [e.seq for e in stored if e.source == "agent"]
        assert await done(c.count_events(cid)) == len(stored)
        assert await done(c.count_events(cid, kind="status", after_seq=2)) == sum(
            e.kind == "status" for e in stored if e.seq > 2
        )
        since = stored[0].timestamp
        assert await done(c.count_events(cid, since=since)) == len(stored)
        assert await done(c.get_event(cid, 2)) == stored[1]
        with pytest.raises(NotFound):
            await done(c.get_event(cid, 999))


async def test_run_control(anyio_backend: str, servers: Any, kind: Kind) -> None:
    async with open_client(kind, servers(anyio_backend), timeout_s=GUARD_S) as c:
        conv = await done(c.create_conversation(agent=sim(steps=50, think_ms=5_000), run=False))
        assert (await done(c.run(conv.id))).status in ("queued", "running")
        with pytest.raises(Conflict) as conflict:
            await done(c.run(conv.id))
        assert conflict.value.code == "conflict"
        with pytest.raises(Conflict):
            await done(c.send_message(conv.id, "not now", if_running="reject"))
        timed_out = await done(c.wait(conv.id, timeout_s=0.2))
        assert timed_out.timed_out
        assert timed_out.conversation.status == "running"
        assert (await done(c.pause(conv.id))).pause_requested
        await done(c.interrupt(conv.id))
        stopped = await done(c.wait(conv.id, timeout_s=GUARD_S))
        assert stopped.conversation.status == "paused"
        assert not stopped.timed_out

        lanes = await done(c.lanes())
        assert lanes.mode == "isolated"
        assert lanes.lanes["run"].size == 10
        assert (await done(c.resize_lane("io", 9))).size == 9
        assert (await done(c.lanes())).lanes["io"].size == 9
        await done(c.resize_lane("io", 8))


async def test_refusals_raise_their_classes(anyio_backend: str, servers: Any, kind: Kind) -> None:
    url = servers(anyio_backend)
    async with open_client(kind, url, timeout_s=GUARD_S) as c:
        with pytest.raises(Invalid) as invalid:
            await done(c.create_conversation(max_steps=0))
        assert invalid.value.status == 422
        assert "max_steps" in invalid.value.message
        with pytest.raises(Invalid):
            await collect(c.iter_events("x" * 32, order="sideways"))
        with pytest.raises(NotFound):
            await done(c.resize_lane("nope", 1))
    # The client always sends JSON: a 400 comes from a body it would not send.
    async with httpx.AsyncClient(base_url=url) as raw:
        response = await raw.post("/api/conversations", content=b"{")
    refused = error_from_response(response)
    assert type(refused) is BadRequest
    assert refused.code == "bad_request"
    assert isinstance(refused, LanewayError)


async def test_api_key(anyio_backend: str, kind: Kind, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_server(anyio_backend, ["--db", ":memory:", "--api-key", "s3cret"]) as server:
        async with open_client(kind, server.base_url) as c:
            assert (await done(c.health())).status == "ok"  # needs no key
            with pytest.raises(Unauthorized) as refused:
                await done(c.count_conversations())
            assert refused.value.code == "unauthorized"
        async with open_client(kind, server.base_url, api_key="s3cret") as c:
            assert await done(c.count_conversations()) == 0
        monkeypatch.setenv("LANEWAY_API_KEY", "s3cret")
        async with open_client(kind, server.base_url) as c:
            assert await done(c.count_conversations()) == 0


def _drain_later(url: str, after_s: float) -> threading.Timer:
    """Interrupt every run, queued or running, ``after_s`` from now."""

    def drain() -> None:
        with Client(url) as c:
            for conv in c.list_conversations():
                if conv.status in ("queued", "running"):
                    c.interrupt(conv.id)

    timer = threading.Timer(after_s, drain)
    timer.start()
    return timer


async def test_full_queue(anyio_backend: str, kind: Kind) -> None:
    args = ["--db", ":memory:", "--run-lane-size", "1", "--run-max-waiting", "1"]
    with running_server(anyio_backend, args) as server:
        async with open_client(kind, server.base_url, timeout_s=GUARD_S) as c:
            blocker = sim(steps=1, think_ms=60_000)
            for _ in range(2):  # one running, one queued
                await done(c.create_conversation(agent=blocker, initial_message="block"))
            with pytest.raises(QueueFull) as full:
                await done(c.create_conversation(initial_message="refused"))
            err = full.value
            assert (err.status, err.code) == (429, "run_queue_full")
            assert err.retry_after is not None
            assert err.retry_after >= 1
            assert err.conversation is not None
            assert err.conversation.status == "idle"
            with pytest.raises(QueueFull) as full_again:
                await done(c.send_message(err.conversation.id, "still refused"))
            assert full_again.value.event is not None

        # With retries, the run is asked for again after Retry-After (whole
        # seconds), and what the server kept is not sent twice.
        async with open_client(kind, server.base_url, timeout_s=GUARD_S, retries=3) as c:
            cid = err.conversation.id
            timer = _drain_later(server.base_url, 0.3)
            began = time.monotonic()
            answer = await done(c.send_message(cid, "now", wait=True, wait_timeout_s=GUARD_S))
            timer.join()
            assert time.monotonic() - began >= 1.0
            assert answer.conversation.status == "finished"
            texts = [e.data["text"] for e in await collect(c.iter_events(cid, kind="message"))]
            assert texts == ["refused", "still refused", "now", "refused", "still refused", "now"]
            assert await done(c.count_conversations()) == 3


def _mock_client(
    answers: list[httpx.Response], sent: list[httpx.Request], **options: Any
) -> Client:
    """A client of a server that gives ``answers`` in turn, noting each request in ``sent``."""

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return answers.pop(0)

    return Client("http://laneway.test", transport=httpx.MockTransport(handle), **options)


def _unavailable(code: str) -> httpx.Response:
    body = {"error": {"code": code, "message": "busy", "retry_after": 0.05}}
    return httpx.Response(503, json=body, headers={"Retry-After": "0.05"})


def test_unavailable_is_sent_again_only_with_retries() -> None:
    sent: list[httpx.Request] = []
    with _mock_client([_unavailable("lane_full")], sent) as c, pytest.raises(Unavailable) as busy:
        c.count_conversations()
    assert (busy.value.code, busy.value.retry_after, len(sent)) == ("lane_full", 0.05, 1)

    answers = [_unavailable("store_unavailable"), httpx.Response(200, json={"count": 7})]
    with _mock_client(answers, sent, retries=2) as c:
        assert c.count_conversations() == 7
    assert len(sent) == 3


def test_a_message_that_may_have_been_stored_is_not_sent_again() -> None:
    sent: list[httpx.Request] = []
    answers = [_unavailable("shutting_down")]
    with _mock_client(answers, sent, retries=3) as c, pytest.raises(Unavailable):
        c.send_message("c1", "once")
    assert len(sent) == 1


def test_an_answer_not_from_laneway_still_raises() -> None:
    sent: list[httpx.Request] = []
    page = httpx.Response(502, text="<html>Bad Gateway</html>")
    with _mock_client([page], sent) as c, pytest.raises(LanewayError) as bad:
        c.get_conversation("c1")
    assert (bad.value.status, bad.value.code) == (502, "http_error")
    assert "Bad Gateway" in bad.value.message
