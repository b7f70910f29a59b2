"""Event routes: search, count and one event (live streams are in ``streams``)."""

from __future__ import annotations

from msgspec import UnsetType
from starlette.requests import Request
from starlette.responses import Response

from laneway.api.encoding import decode_query, given, json_response
from laneway.api.exceptions import ApiError
from laneway.api.routing import service_of
from laneway.api.schemas import (
    MAX_SEQ,
    Count,
    EventCountQuery,
    EventPage,
    EventQuery,
)
from laneway.api.timestamps import to_stored
from laneway.models import EventFilter


def _filter(query: EventCountQuery) -> EventFilter:
    return EventFilter(
        kind=given(query.kind),
        source=given(query.source),
        text=given(query.text),
        after_seq=given(query.after_seq),
        before_seq=given(query.before_seq),
        since=_stamp("since", query.since),
        until=_stamp("until", query.until),
    )


def _stamp(name: str, value: str | UnsetType) -> str | None:
    text = given(value)
    return None if text is None else to_stored(name, text)


async def search_events(request: Request) -> Response:
    query = decode_query(request, EventQuery)
    items, next_cursor = await service_of(request).search_events(
        request.path_params["id"],
        _filter(query),
        order=query.order,
        limit=query.limit,
        cursor=given(query.cursor),
    )
    return json_response(EventPage(items, next_cursor))


async def count_events(request: Request) -> Response:
    query = decode_query(request, EventCountQuery)
    count = await service_of(request).count_events(request.path_params["id"], _filter(query))
    return json_response(Count(count))


async def get_event(request: Request) -> Response:
    seq: int = request.path_params["seq"]
    if seq > MAX_SEQ:
        raise ApiError(404, f"no event {seq}: seqs are below 2**63")
    return json_response(await service_of(request).get_event(request.path_params["id"], seq))
