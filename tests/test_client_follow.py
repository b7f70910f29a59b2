"""The clients' ``follow`` gives every event once and in order across a dropped
connection and across a server restarted on the same database and port; with
deltas, the deltas too."""

from __future__ import annotations

import threading
from contextlib import ExitStack
from pathlib import Path

import pytest

from laneway.client import AgentSpec, Client, DeltaBody, Event, NotFound
from tests.clients import Kind, collect, done, open_client, take_until
from tests.serverproc import free_port, running_server
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.anyio

GUARD_S = 10.0
# Steps long enough for the follow to be cut in the middle of a run.
AGENT = AgentSpec("sim", {"steps": 4, "think_ms": 150, "deltas": 3})


def finished(item: Event | DeltaBody) -> bool:
    return isinstance(item, Event) and item.data.get("status") == "finished"


def check_items(items: list[Event | DeltaBody], stored: list[Event], *, deltas: bool) -> None:
    """Every stored event once, in order, and deltas only if asked for."""
    assert [item for item in items if isinstance(item, Event)] == stored
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    given = [item for item in items if isinstance(item, DeltaBody)]
    assert bool(given) == deltas
    assert {d.conversation_id for d in given} <= {stored[0].conversation_id}


@pytest.mark.parametrize(("kind", "deltas"), [("sync", False), ("async", True)])
async def test_follow_resumes_after_a_dropped_connection(
    anyio_backend: str, kind: Kind, deltas: bool
) -> None:
    with (
        running_server(anyio_backend, ["--db", ":memory:"]) as server,
        TcpProxy(server.port) as proxy,
    ):
        async with open_client(kind, f"http://127.0.0.1:{proxy.port}", timeout_s=GUARD_S) as c:
            conv = await done(c.create_conversation(agent=AGENT, initial_message="go"))
            drops = 0

            def cut_twice(item: Event | DeltaBody) -> bool:
                # Cut once mid-run and once as soon as the next event came.
                nonlocal drops
                if isinstance(item, Event) and item.seq >= 5 and drops < 2:
                    drops += 1
                    proxy.drop()
                return finished(item)

            items = await take_until(c.follow(conv.id, deltas=deltas), cut_twice)
            assert drops == 2
            stored = await collect(c.iter_events(conv.id))
            check_items(items, stored, deltas=deltas)


@pytest.mark.parametrize(("kind", "deltas"), [("sync", True), ("async", False)])
async def test_follow_goes_on_across_a_server_restart(
    anyio_backend: str, kind: Kind, deltas: bool, tmp_path: Path
) -> None:
    port = free_port()
    args = ["--db", str(tmp_path / "restart.db")]
    with ExitStack() as stack:
        server = stack.enter_context(running_server(anyio_backend, args, port=port))
        async with open_client(kind, server.base_url, timeout_s=GUARD_S) as c:
            conv = await done(c.create_conversation(agent=AGENT, initial_message="go"))
            statuses_at_restart: list[str] = []

            def restart() -> None:
                # Stopped mid-run, the run is paused at shutdown; the new server
                # runs it again when asked. Meanwhile the follow reads on.
                server.stop()
                again = stack.enter_context(running_server(anyio_backend, args, port=port))
                with Client(again.base_url) as other:
                    statuses_at_restart.append(other.get_conversation(conv.id).status)
                    other.run(conv.id)

            restarter = threading.Thread(target=restart)

            def restart_once(item: Event | DeltaBody) -> bool:
                if isinstance(item, Event) and item.source == "agent" and not restarter.ident:
                    restarter.start()
                return finished(item)

            follow = c.follow(conv.id, deltas=deltas, reconnect_timeout_s=GUARD_S)
            items = await take_until(follow, restart_once)
            restarter.join()
            assert statuses_at_restart == ["paused"]
            stored = await collect(c.iter_events(conv.id))
            check_items(items, stored, deltas=deltas)


async def test_follow_of_a_missing_conversation_raises(anyio_backend: str) -> None:
    with running_server(anyio_backend, ["--db", ":memory:"]) as server:
        async with open_client("async", server.base_url) as c:
            with pytest.raises(NotFound):
                await take_until(c.follow("nope"), finished)
