"""What the cluster measurements share: how an instance is started, and reads
of the database the instances share."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from benchmarks.server import ServerOptions

BACKEND = "asyncio"
C = "/api/conversations"
# Over any wait for the servers: a run that never ends, a create never answered.
GUARD_S = 120.0


def instance(url: str, *extra: str) -> ServerOptions:
    """A ``laneway serve`` on the PostgreSQL database at ``url``."""
    return ServerOptions(backend=BACKEND, db=url, extra=extra)


def fetch_one(url: str, sql: str, *params: Any) -> tuple[Any, ...]:
    """One row, straight from the database, as another process would read it."""
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, params).fetchone()
    if row is None:
        raise RuntimeError(f"no row for {sql!r}")
    return tuple(row)


def stamp(text: str) -> float:
    """An event's RFC 3339 timestamp as seconds since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
