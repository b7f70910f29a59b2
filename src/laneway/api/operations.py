"""Operational routes: health, readiness, lanes (read and resize) and metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from laneway.api import metrics
from laneway.api.encoding import decode_body, json_response
from laneway.api.exceptions import ApiError
from laneway.api.routing import service_of, settings_of
from laneway.api.schemas import Health, InstancesView, LanesView, ResizeLane
from laneway.lanes import LANE_NAMES


async def health(request: Request) -> Response:
    return json_response(Health("ok"))


async def ready(request: Request) -> Response:
    service = getattr(request.app.state, "service", None)
    if service is None:
        return json_response(Health("starting"), 503)
    problem = service.store_problem()
    if problem is not None:
        return json_response(Health("store_unavailable", problem), 503)
    return json_response(Health("ready"))


async def get_lanes(request: Request) -> Response:
    lanes = service_of(request).lanes
    return json_response(LanesView(lanes.mode, lanes.snapshot()))


async def get_instances(request: Request) -> Response:
    return json_response(InstancesView(await service_of(request).instances()))


async def resize_lane(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in LANE_NAMES:
        raise ApiError(404, f"no lane {name!r}; lanes are {', '.join(LANE_NAMES)}")
    body = await decode_body(request, ResizeLane, settings_of(request).max_body_bytes)
    lane = service_of(request).lanes[name]
    lane.resize(body.size)
    return json_response(lane.snapshot())


async def get_metrics(request: Request) -> Response:
    service = service_of(request)
    conversations = await service.count_by_status()
    body = metrics.render(
        service.lanes.snapshot(),
        conversations,
        service.broker.subscriber_count(),
        service.agents.llm_stats.snapshot(),
    )
    return Response(body, media_type=metrics.CONTENT_TYPE)
