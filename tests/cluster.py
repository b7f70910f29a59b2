"""Helpers of the cluster tests: notifications, and the server's side of a
connection."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio
import psycopg

from tests.pgserver import PostgresServer
from tests.services import GUARD_S

# Pauses of the tests' listeners between tries to connect again: short, so a
# test waits little once the database takes connections again.
TEST_BACKOFF_S = 0.05


def notify(url: str, channel: str, *payloads: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for payload in payloads:
            conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


def kill_backend(url: str, pid: int | None) -> None:
    """End a session from the server's side, as a restart or a failover would."""
    assert pid is not None, "no session to end"
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
    assert row == (True,)


@contextmanager
def connections_refused(postgres: PostgresServer, url: str) -> Iterator[None]:
    """The database at ``url`` takes no new connection in the block; those open
    stay open."""
    with psycopg.connect(url) as conn:
        dbname = conn.info.dbname
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS false")
        try:
            yield
        finally:
            admin.execute(f"ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS true")


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds: for what another thread does."""
    with anyio.fail_after(GUARD_S):
        while not condition():
            await anyio.sleep(0.005)
