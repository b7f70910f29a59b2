"""A PostgreSQL ``LISTEN`` session, for whatever channels an instance follows.

One connection of its own, in a thread of its own: psycopg's async API does
not run under trio, and a blocking wait in a lane's thread would hold a token
for ever. The thread waits on the connection's socket and on a wakeup socket
together, so :meth:`Listener.stop` ends it at once, without polling.

Callbacks run in the listener's thread, one notification at a time, and must
return quickly: hop to the event loop (see :func:`laneway.fromthread.call_soon`)
rather than wait on it. A slow callback delays every channel, and a listener
that stops reading holds back PostgreSQL's notification queue, which all of
the database's sessions share.

When the connection drops, the listener connects again, with a growing pause
between tries, and calls each registration's ``on_reconnect`` once it listens
again. Whatever was notified meanwhile is lost: a consumer catches up from the
store there, and every notification after it is delivered.
"""

from __future__ import annotations

import logging
import random
import selectors
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

import anyio
import anyio.to_thread
import psycopg
from psycopg import sql

from laneway.store.base import StoreUnavailable

__all__ = ["Listener"]

log = logging.getLogger("laneway.cluster")

CONNECT_TIMEOUT_S = 10
# Pauses between tries to connect again: the first, doubling up to the last.
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 5.0


class _Registration:
    __slots__ = ("on_notify", "on_reconnect")

    def __init__(
        self, on_notify: Callable[[str], object], on_reconnect: Callable[[], object] | None
    ) -> None:
        self.on_notify = on_notify
        self.on_reconnect = on_reconnect


class Listener:
    """Notifications of the channels registered with :meth:`on`, on a connection
    to the database at ``url``, from :meth:`start` (or entering it with ``async
    with``) until :meth:`stop`."""

    def __init__(self, url: str, *, max_backoff_s: float = MAX_BACKOFF_S) -> None:
        self._url = url
        self._max_backoff_s = max_backoff_s
        self._channels: dict[str, list[_Registration]] = {}
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._backend_pid: int | None = None

    def on(
        self,
        channel: str,
        on_notify: Callable[[str], object],
        *,
        on_reconnect: Callable[[], object] | None = None,
    ) -> None:
        """Call ``on_notify(payload)`` for each notification on ``channel``, and
        ``on_reconnect()`` each time the listener listens again after losing its
        connection; both in the listener's thread. Only before :meth:`start`."""
        if self._thread is not None:
            raise RuntimeError("register with a listener before starting it")
        self._channels.setdefault(channel, []).append(_Registration(on_notify, on_reconnect))

    @property
    def backend_pid(self) -> int | None:
        """The server process of the listening connection; None while there is none."""
        return self._backend_pid

    def start(self) -> None:
        """Connect and listen, then go on in a thread of its own: every
        notification committed after this returns is delivered (until the
        connection drops). Blocks; raises StoreUnavailable if it cannot connect."""
        if self._thread is not None:
            raise RuntimeError("a listener starts once")
        try:
            conn = self._connect()
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot listen on the PostgreSQL database: {exc}") from exc
        self._thread = threading.Thread(
            target=self._run, args=(conn,), name="laneway-listener", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """End the thread and its connection, and wait for it to end. Blocks only
        as long as a connection being made may take; a second call does nothing."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake_w.send(b"\0")
        if self._thread is not None:
            self._thread.join()
        self._wake_r.close()
        self._wake_w.close()

    async def __aenter__(self) -> Self:
        try:
            await anyio.to_thread.run_sync(self.start)
        except BaseException:
            # Cancelled as it started: a thread must not be left listening.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.stop)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.stop)

    # -- the listener's thread -----------------------------------------------

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(
            self._url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="laneway-listener",
            # TCP keepalives (libpq ignores them on a Unix socket): a connection
            # that only waits would otherwise never learn that the server's
            # machine went away. Without an answer in some 25 s, it is dropped.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        try:
            for channel in self._channels:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except BaseException:
            conn.close()
            raise
        self._backend_pid = conn.info.backend_pid
        return conn

    def _run(self, conn: psycopg.Connection | None) -> None:
        try:
            while conn is not None:
                try:
                    self._listen(conn)
                    return
                except Exception as exc:
                    # A lost connection, as a rule (psycopg.OperationalError);
                    # anything else would otherwise end listening unseen.
                    log.warning("the listener lost its connection (%s); connecting again", exc)
                conn.close()
                self._backend_pid = None
                conn = self._reconnect()
        finally:
            if conn is not None:
                conn.close()
            self._backend_pid = None

    def _listen(self, conn: psycopg.Connection) -> None:
        """Hand on notifications until stopped; raises if the connection drops."""
        with selectors.DefaultSelector() as selector:
            selector.register(conn.fileno(), selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                # timeout=0: take what has come (some may have come with the
                # replies to LISTEN, and wait in psycopg) without waiting.
                for notify in conn.notifies(timeout=0):
                    self._deliver(notify.channel, notify.payload)
                selector.select()

    def _deliver(self, channel: str, payload: str) -> None:
        for registration in self._channels.get(channel, ()):
            try:
                registration.on_notify(payload)
            except Exception:
                log.exception("a callback of channel %r failed", channel)

    def _reconnect(self) -> psycopg.Connection | None:
        """A new listening connection, once one can be made; None if stopped first."""
        pause = FIRST_BACKOFF_S
        while not self._stopping.is_set():
            try:
                conn = self._connect()
            except Exception as exc:
                log.debug("the listener cannot connect yet: %s", exc)
                # Jittered, so that instances cut off together do not all come
                # back at the same moment.
                if self._stopping.wait(pause * random.uniform(0.5, 1.0)):
                    return None
                pause = min(pause * 2, self._max_backoff_s)
                continue
            log.info("the listener listens again")
            for registrations in self._channels.values():
                for registration in registrations:
                    if registration.on_reconnect is not None:
                        try:
                            registration.on_reconnect()
                        except Exception:
                            log.exception("a reconnect callback failed")
            return conn
        return None
