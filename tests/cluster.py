"""Instances of a cluster opened in the test's own process, each with a store
of its own on one PostgreSQL database, as separate processes would have."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import psycopg

from laneway.agents import AgentCatalog
from laneway.cluster.service import SharedConversationService
from laneway.cluster.settings import ClusterSettings, Role
from laneway.lanes import Lanes, LanesConfig
from laneway.models import AgentSpec
from laneway.store.postgres import PostgresEventStore
from tests import agents
from tests.services import GUARD_S

# Short, so that heartbeats (a third of it) come often; long enough that a
# loaded test machine never misses three in a row.
TTL_S = 3.0


@asynccontextmanager
async def instance(
    url: str, role: Role = "all", *, ttl_s: float = TTL_S, **kwargs: Any
) -> AsyncIterator[SharedConversationService]:
    lane_keys = {k: kwargs.pop(k) for k in list(kwargs) if k in LanesConfig.__struct_fields__}
    lanes = Lanes.create(LanesConfig(**lane_keys))
    store = PostgresEventStore(url)
    settings = ClusterSettings(role=role, lease_ttl_s=ttl_s)
    catalog = AgentCatalog(allowed=agents.ALLOWED)
    try:
        service = SharedConversationService(
            store, lanes, cluster=settings, agents=catalog, **kwargs
        )
        with anyio.fail_after(GUARD_S):
            async with service:
                yield service
    finally:
        store.close()


def sql(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """One statement, straight to the database, as another process would."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def sim(**config: Any) -> AgentSpec:
    return AgentSpec("sim", config)
