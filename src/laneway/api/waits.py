"""Answers that wait for a run to end: ``"wait": true`` on a create or a message,
and ``GET /api/conversations/{id}/wait``; see :mod:`laneway.waiting`.

While it waits, a request also watches its client, so that one gone away stops
the wait at once rather than hold it to its timeout; the run is not touched.
"""

from __future__ import annotations

from collections.abc import Mapping

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from laneway.api.encoding import decode_query, json_response
from laneway.api.routing import service_of
from laneway.api.schemas import WaitQuery, WaitResult
from laneway.waiting import RunWait, current_run


async def wait_for_run(request: Request) -> Response:
    query = decode_query(request, WaitQuery)
    wait = current_run(service_of(request), request.path_params["id"], query.after_seq)
    return await answer(request, wait, query.timeout_s)


async def answer(
    request: Request,
    wait: RunWait,
    timeout_s: float,
    *,
    ended_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """``ended_code`` once the run has ended (or if there is none), 202 with what
    exists so far if it is still queued or running after ``timeout_s``."""
    ended: list[bool] = []  # left empty if the client goes away first
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cancel_on_disconnect, request.receive, tg.cancel_scope)
        ended.append(await wait.until_ended(timeout_s))
        tg.cancel_scope.cancel()
    if not ended:
        return _ClientGone()
    waited = await wait.read(ended=ended[0])
    body = WaitResult(waited.conversation, waited.events, waited.next_cursor)
    return json_response(body, ended_code if waited.ended else 202, headers=headers)


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    # The body has been read (or there is none), so the next message that
    # matters is the client going away.
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


class _ClientGone(Response):
    """No answer at all: the client has closed the connection, and a response
    started now would only be refused by the server."""

    def __init__(self) -> None:
        super().__init__(status_code=204)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return
