"""The Starlette application and its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from laneway.config import Settings
from laneway.lanes import Lanes

_encoder = msgspec.json.Encoder()


def json_response(body: object, status_code: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code, media_type="application/json")


async def health(request: Request) -> Response:
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    if getattr(request.app.state, "lanes", None) is None:
        return json_response({"status": "starting"}, 503)
    return json_response({"status": "ready"})


def create_app(settings: Settings | None = None) -> Starlette:
    config = settings if settings is not None else Settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Limiters belong to the running backend, so they are made here.
        app.state.lanes = Lanes.create(config.lanes())
        try:
            yield
        finally:
            app.state.lanes = None

    app = Starlette(
        routes=[Route("/health", health), Route("/ready", ready)],
        lifespan=lifespan,
    )
    app.state.settings = config
    app.state.lanes = None
    return app
