"""The app in-process, behind httpx's ASGITransport, with its lifespan running."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette

from laneway.app import create_app
from laneway.config import Settings
from laneway.service import ConversationService
from tests import agents


@asynccontextmanager
async def api_client(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh app with an in-memory store; ``client.app`` is the app."""
    settings = Settings(db=":memory:", agents=agents.ALLOWED, **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def service(client: httpx.AsyncClient) -> ConversationService:
    app: Starlette = client.app  # type: ignore[attr-defined]
    svc: ConversationService = app.state.service
    return svc
