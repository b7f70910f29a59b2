"""The Starlette application: routes, auth, error handling, and the lifespan that
owns the lanes, the store and the conversation service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

import laneway
from laneway.agents import AgentCatalog
from laneway.api.auth import ApiKeyMiddleware
from laneway.api.encoding import encode
from laneway.api.errors import handle_exception, handle_http_exception
from laneway.api.exceptions import ApiError
from laneway.api.limits import HeadLimitMiddleware
from laneway.api.openapi import build_document
from laneway.api.routes import build_routes, documented_operations
from laneway.cluster.service import open_service
from laneway.config import Settings, load_tools
from laneway.errors import Conflict, InvalidRequest, NotFound, ShuttingDown, StoreUnavailable
from laneway.lanes import LaneFull, Lanes
from laneway.models import InvalidCursor
from laneway.store import open_store
from laneway.tools import ToolRegistry

# Exceptions with a defined answer; anything else is a 500 (and a bug).
_MAPPED: tuple[type[Exception], ...] = (
    ApiError,
    NotFound,
    Conflict,
    InvalidRequest,
    InvalidCursor,
    ShuttingDown,
    StoreUnavailable,
    LaneFull,
)


def create_app(settings: Settings | None = None, tools: ToolRegistry | None = None) -> Starlette:
    """``tools`` defaults to those the settings enable, loaded here, before serving."""
    config = settings if settings is not None else Settings()
    registry = tools if tools is not None else load_tools(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Limiters belong to the running backend, so they are made here.
        lanes = Lanes.create(config.lanes())
        store = await lanes.io.run_sync(open_store, config.db)
        agents = AgentCatalog(allowed=config.agents, llm=config.llm(), tools=registry)
        try:
            async with open_service(
                store,
                lanes,
                cluster=config.cluster(),
                step_timeout_s=config.step_timeout_s,
                shutdown_grace_s=config.shutdown_grace_s,
                agents=agents,
            ) as service:
                app.state.service = service
                try:
                    yield
                finally:
                    app.state.service = None
        finally:
            agents.close()
            store.close()

    serves_api = config.cluster().serves_api
    operations = documented_operations(
        keys=bool(config.api_keys), metrics_auth=config.metrics_auth, serves_api=serves_api
    )
    document = build_document(
        operations,
        title="laneway",
        version=laneway.__version__,
    )
    handlers = dict.fromkeys(_MAPPED, handle_exception)
    app = Starlette(
        routes=build_routes(encode(document), serves_api=serves_api),
        middleware=[
            Middleware(HeadLimitMiddleware, max_bytes=config.max_header_bytes),
            Middleware(ApiKeyMiddleware, keys=config.api_keys, protect_metrics=config.metrics_auth),
        ],
        exception_handlers={
            **handlers,
            HTTPException: handle_http_exception,
            Exception: handle_exception,
        },
        lifespan=lifespan,
    )
    app.state.settings = config
    app.state.service = None
    return app
