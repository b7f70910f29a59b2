"""The instances sharing a database, as each last said at its heartbeat."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg

from laneway.cluster.settings import Role
from laneway.models import format_timestamp

_LIVE = (
    "SELECT id, role, started_at, heartbeat_at, lanes, runs FROM instances"
    " WHERE expires_at > now() ORDER BY started_at, id"
)
_decode_lanes = msgspec.json.Decoder(dict[str, Any]).decode


class Instance(msgspec.Struct, frozen=True):
    id: str
    role: Role
    started_at: str
    # RFC 3339, UTC, as every time laneway shows.
    heartbeat_at: str
    # Each lane's snapshot, as GET /api/lanes shows it.
    lanes: dict[str, Any]
    # Runs holding a run token.
    runs: int


def live(conn: psycopg.Connection) -> list[Instance]:
    """The instances whose last heartbeat is younger than their lease TTL."""
    return [
        Instance(
            id=row[0],
            role=row[1],
            started_at=row[2],
            heartbeat_at=format_timestamp(row[3]),
            lanes=_decode_lanes(row[4]),
            runs=int(row[5]),
        )
        for row in conn.execute(_LIVE).fetchall()
    ]
