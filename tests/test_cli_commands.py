"""The client commands (all but chat: tests/test_cli_chat.py) against the real
server under each backend. Most run in this process, their output captured as
if piped; what the process itself does (its exit, its output to a pipe or a
terminal, a follow left running) is tested on real processes."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from laneway.client import AgentSpec, Client
from tests.cliproc import Running, cli, ended, laneway, spawn
from tests.serverproc import free_port, lazy_servers, running_server

BACKENDS = ["asyncio", "trio"]
ESC = "\x1b"


@pytest.fixture(scope="module")
def servers() -> Iterator[Callable[[str], str]]:
    """One server a backend for the module, started when first asked for."""
    with lazy_servers() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, servers: Callable[[str], str]) -> str:
    return servers(request.param)


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    with Client(url) as c:
        yield c


def ok(*args: str, env: dict[str, str] | None = None) -> str:
    """The output of a command that must succeed, with no escape in it: output
    that is not to a terminal is plain text."""
    done = cli(*args, env=env)
    assert done.status == 0, done.stderr
    assert ESC not in done.stdout
    return done.stdout


def as_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json"))


def finished_chat(client: Client, text: str = "hi") -> str:
    """A conversation whose run has answered ``text`` and finished."""
    answer = client.create_conversation(
        agent=AgentSpec("sim", {"steps": 2}), initial_message=text, wait=True
    )
    assert answer.conversation.status == "finished"
    return answer.conversation.id


def test_conversations_list_show_delete(url: str, client: Client) -> None:
    cid = finished_chat(client)
    listed = ok("conversations", "list", "--url", url)
    # The whole id on one line, whatever the table's width.
    assert any(cid in line and "finished" in line for line in listed.splitlines())
    assert cid in [c["id"] for c in as_json("conversations", "list", "--url", url)]
    assert as_json("conversations", "list", "--status", "idle", "--url", url) == []

    shown = ok("conversations", "show", cid, "--url", url)
    assert "finished" in shown
    assert "2 of at most" in shown
    record = as_json("conversations", "show", cid, "--url", url)
    assert record["id"] == cid
    assert record["agent"]["kind"] == "sim"

    assert ok("conversations", "delete", cid, "--url", url).strip() == f"deleted {cid}"
    gone = cli("conversations", "show", cid, "--url", url)
    assert gone.status == 1
    assert gone.stdout == ""
    assert gone.stderr == f"laneway: no conversation {cid!r} (404 not_found)\n"


def test_events_and_filters(url: str, client: Client) -> None:
    cid = finished_chat(client, "ping")
    lines = ok("events", cid, "--url", url).splitlines()
    assert len(lines) == client.count_events(cid)
    assert lines[1].split()[2:] == ["user", "message", "ping"]
    statuses = as_json("events", cid, "--kind", "status", "--url", url)
    assert [e["data"]["status"] for e in statuses] == ["idle", "queued", "running", "finished"]
    agent = as_json("events", cid, "--source", "agent", "--url", url)
    assert [e["data"]["text"] for e in agent] == [
        "step 1 of 2 (read 1 new message(s))",
        "step 2 of 2",
    ]


def test_events_follow(url: str, client: Client) -> None:
    """Stored events, then new ones as JSON lines, one document each; filtered."""
    cid = finished_chat(client)
    follow = Running("events", cid, "--follow", "--kind", "status", "--json", "--url", url)
    try:
        follow.lines_until(lambda line: '"finished"' in line)
        client.send_message(cid, "again")
        lines = follow.lines_until(lambda line: '"finished"' in line)
    finally:
        follow.stop()
    events = [json.loads(line) for line in lines]
    assert [e["data"]["status"] for e in events] == ["queued", "running", "finished"]
    assert [e["kind"] for e in events] == ["status"] * 3


def test_send_wait(url: str, client: Client) -> None:
    cid = client.create_conversation(agent=AgentSpec("sim", {"steps": 1})).id
    sent = ok("send", cid, "hello", "--wait", "--url", url)
    assert "step 1 of 1 (read 1 new message(s))" in sent
    assert sent.splitlines()[-1] == f"{cid}: finished"
    answer = as_json("send", cid, "more", "--wait", "--url", url)
    assert answer["timed_out"] is False
    assert answer["events"][0]["data"] == {"text": "more"}
    accepted = as_json("send", cid, "stored only", "--no-run", "--url", url)
    assert accepted["conversation"]["status"] == "finished"
    assert accepted["event"]["data"] == {"text": "stored only"}


def test_pause_interrupt_run(url: str, client: Client) -> None:
    long = AgentSpec("sim", {"steps": 5, "think_ms": 30_000})
    cid = client.create_conversation(agent=long, initial_message="go").id
    assert ok("pause", cid, "--url", url).strip() == f"{cid}: running (pause requested)"
    # The answer is the conversation as the interrupt found it; the run stops
    # a moment later.
    assert ok("interrupt", cid, "--url", url).startswith(f"{cid}: ")
    assert client.wait(cid, timeout_s=5).conversation.status == "paused"
    assert as_json("run", cid, "--url", url)["status"] in ("queued", "running")
    refused = cli("run", cid, "--url", url)
    assert refused.status == 1
    assert "(409 conflict)" in refused.stderr
    assert as_json("interrupt", cid, "--url", url)["id"] == cid
    assert client.wait(cid, timeout_s=5).conversation.status == "paused"


def test_lanes_and_resize(url: str) -> None:
    table = ok("lanes", "--url", url)
    assert "wait p99" in table
    rows = {line.split()[1]: line.split()[2:] for line in table.splitlines() if "│" in line}
    assert set(rows) >= {"run", "tool", "io"}
    view = as_json("lanes", "--url", url)
    assert view["lanes"]["io"]["wait_time"]["count"] > 0
    size = view["lanes"]["tool"]["size"]
    assert ok("lanes", "resize", "tool", "3", "--url", url).startswith("lane tool: size 3")
    assert as_json("lanes", "--url", url)["lanes"]["tool"]["size"] == 3
    assert as_json("lanes", "resize", "tool", str(size), "--url", url)["size"] == size


def test_instances(url: str) -> None:
    table = ok("instances", "--url", url)
    assert "local" in table
    [only] = as_json("instances", "--url", url)["items"]
    assert only["role"] == "all"


def test_lanes_watch_refreshes_in_place(url: str) -> None:
    """Under a terminal the table is redrawn in place; NO_COLOR leaves out colour."""
    screen = io.StringIO()
    with Client(url) as c:
        size = c.lanes().lanes["tool"].size
        child = spawn("lanes", "--watch", "--interval", "0.1", "--url", url, env={"NO_COLOR": "1"})
        child.logfile_read = screen
        try:
            child.expect("wait p99")
            c.resize_lane("tool", size + 1)
            child.expect(rf"│ tool │\s+{size + 1} │")
            child.sendintr()
            assert ended(child) == 130
        finally:
            c.resize_lane("tool", size)
            child.close(force=True)
    assert "\x1b[2K" in screen.getvalue()  # lines erased: redrawn, not printed again
    assert colours(screen.getvalue()) == []


def colours(text: str) -> list[str]:
    """The SGR sequences in ``text`` that set a colour (30-38, 40-48, 90-107)."""
    found = []
    for params in re.findall(r"\x1b\[([0-9;]*)m", text):
        codes = [int(p) for p in params.split(";") if p]
        if any(30 <= n <= 38 or 40 <= n <= 48 or 90 <= n <= 107 for n in codes):
            found.append(params)
    return found


def test_a_process_prints_plain_text_when_piped(servers: Callable[[str], str]) -> None:
    url = servers("asyncio")
    with Client(url) as c:
        cid = finished_chat(c)
    for env in ({}, {"NO_COLOR": "1"}):
        for args, shown in (
            (("lanes",), "wait p99"),
            (("events", cid), "step 2 of 2"),
            (("conversations", "list"), cid),
        ):
            done = laneway(*args, "--url", url, env=env)
            assert done.returncode == 0, done.stderr
            assert shown in done.stdout
            assert ESC not in done.stdout


def test_a_process_fails_in_one_line(servers: Callable[[str], str]) -> None:
    url = servers("asyncio")
    unknown = laneway("events", "nope", "--url", url)
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == "laneway: no conversation 'nope' (404 not_found)\n"
    unreachable = f"http://127.0.0.1:{free_port()}"
    done = laneway("lanes", env={"LANEWAY_URL": unreachable})
    assert done.returncode == 1
    assert done.stderr.startswith(f"laneway: cannot reach the server at {unreachable}: ")
    assert len(done.stderr.splitlines()) == 1
    usage = laneway("lanes", "resize", "tool", "many", "--url", url)
    assert usage.returncode == 2
    assert "invalid int value" in usage.stderr


def test_errors(servers: Callable[[str], str]) -> None:
    url = servers("asyncio")
    for args in (
        ("send", "nope", "hi"),
        ("interrupt", "nope"),
        ("conversations", "delete", "nope"),
    ):
        done = cli(*args, "--url", url)
        assert (done.status, done.stderr) == (
            1,
            "laneway: no conversation 'nope' (404 not_found)\n",
        )
    unreachable = cli("conversations", "list", "--url", f"http://127.0.0.1:{free_port()}")
    assert unreachable.status == 1
    assert "cannot reach the server" in unreachable.stderr
    usage = cli("chat", "some-id", "--agent", "sim", "--url", url)
    assert usage.status == 2
    assert "for a new conversation" in usage.stderr


def test_api_key() -> None:
    with running_server("asyncio", ["--db", ":memory:", "--api-key", "sesame"]) as server:
        refused = cli("lanes", "--url", server.base_url)
        assert refused.status == 1
        assert "(401 unauthorized)" in refused.stderr
        ok("lanes", "--url", server.base_url, "--api-key", "sesame")
        ok("lanes", "--url", server.base_url, env={"LANEWAY_API_KEY": "sesame"})
