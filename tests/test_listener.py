"""The listener: notifications of the channels registered reach their callbacks
in the listener's thread, in order; a failing callback stops nothing; a
connection the server ends is made again, and each registration told; and a
stop ends the thread at once, whether it waits or tries to connect again."""

from __future__ import annotations

import threading

import anyio
import anyio.to_thread
import pytest

from laneway.cluster.listener import Listener
from laneway.store.base import StoreUnavailable
from tests.pgserver import PostgresServer
from tests.services import GUARD_S
from tests.streams import TEST_BACKOFF_S, connections_refused, eventually, kill_backend, notify

pytestmark = pytest.mark.anyio


class Heard:
    """What the callbacks of one channel were given, and in which threads."""

    def __init__(self) -> None:
        self.payloads: list[str] = []
        self.threads: set[str] = set()
        self.reconnects = 0

    def notified(self, payload: str) -> None:
        self.payloads.append(payload)
        self.threads.add(threading.current_thread().name)

    def reconnected(self) -> None:
        self.reconnects += 1


async def test_each_channel_reaches_its_callbacks_in_order_in_the_listeners_thread(
    pg_url: str,
) -> None:
    listener = Listener(pg_url)
    first, second, also_first = Heard(), Heard(), Heard()
    listener.on("first", first.notified)
    listener.on("second", second.notified)
    listener.on("first", also_first.notified)
    async with listener:
        # Listening once entered: nothing sent from here on is missed.
        notify(pg_url, "first", *[f"f{i}" for i in range(50)])
        notify(pg_url, "unheard", "x")
        notify(pg_url, "second", "s")
        await eventually(lambda: len(first.payloads) == 50 and second.payloads == ["s"])
    assert first.payloads == also_first.payloads == [f"f{i}" for i in range(50)]
    assert first.threads == second.threads == {"laneway-listener"}


async def test_a_failing_callback_stops_neither_the_others_nor_later_ones(pg_url: str) -> None:
    listener = Listener(pg_url)
    heard = Heard()

    def fail(payload: str) -> None:
        raise RuntimeError(payload)

    listener.on("c", fail)
    listener.on("c", heard.notified)
    async with listener:
        notify(pg_url, "c", "a", "b")
        await eventually(lambda: heard.payloads == ["a", "b"])


async def test_registering_once_started_or_starting_twice_is_refused(pg_url: str) -> None:
    async with Listener(pg_url) as listener:
        with pytest.raises(RuntimeError, match="before starting"):
            listener.on("c", print)
        with pytest.raises(RuntimeError, match="starts once"):
            listener.start()


async def test_a_server_that_cannot_be_reached_is_unavailable(pg_url: str) -> None:
    listener = Listener(pg_url.replace("host=", "host=/nonexistent", 1))
    with pytest.raises(StoreUnavailable, match="cannot listen"):
        async with listener:
            pass


async def test_a_connection_the_server_ends_is_made_again(pg_url: str) -> None:
    listener = Listener(pg_url, max_backoff_s=TEST_BACKOFF_S)
    heard = Heard()
    listener.on("c", heard.notified, on_reconnect=heard.reconnected)
    async with listener:
        first_pid = listener.backend_pid
        kill_backend(pg_url, first_pid)
        await eventually(lambda: heard.reconnects == 1)
        assert listener.backend_pid not in (None, first_pid)
        # Listening again by the time it says so.
        notify(pg_url, "c", "after")
        await eventually(lambda: heard.payloads == ["after"])
    assert listener.backend_pid is None


async def stop_in_time(listener: Listener) -> None:
    """Stop the listener, failing (rather than hanging) if it does not end in time."""
    # In a thread of its own, that a test failing leaves behind.
    stopping = threading.Thread(target=listener.stop, daemon=True)
    stopping.start()
    await anyio.to_thread.run_sync(stopping.join, GUARD_S)
    assert not stopping.is_alive(), "the listener did not stop"
    assert listener.backend_pid is None


async def test_stop_ends_a_listener_that_waits(pg_url: str) -> None:
    listener = Listener(pg_url)
    listener.on("c", print)
    await anyio.to_thread.run_sync(listener.start)
    await anyio.sleep(0.05)
    # The thread waits on its sockets without a timeout: only the wakeup can
    # end it in time.
    await stop_in_time(listener)


async def test_stop_ends_a_listener_waiting_to_connect_again(
    postgres: PostgresServer, pg_url: str
) -> None:
    # Its next try would be an hour away: only the wakeup can end it in time.
    listener = Listener(pg_url, max_backoff_s=3600)
    heard = Heard()
    listener.on("c", heard.notified, on_reconnect=heard.reconnected)
    await anyio.to_thread.run_sync(listener.start)
    with connections_refused(postgres, pg_url):
        kill_backend(postgres.url("postgres"), listener.backend_pid)
        await eventually(lambda: listener.backend_pid is None)
        # Several tries, refused, so that its pause has grown.
        await anyio.sleep(0.5)
        await stop_in_time(listener)
    assert heard.reconnects == 0
