"""Every HTTP route of laneway, declared once (see :class:`Operation`)."""

from __future__ import annotations

import dataclasses

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from laneway.api import conversations as conv
from laneway.api import events as ev
from laneway.api import lane_stream, streams, waits
from laneway.api import operations as ops
from laneway.api.operator_page import page_routes
from laneway.api.routing import Endpoint, Operation
from laneway.api.schemas import (
    MAX_SEQ,
    ConversationPage,
    Count,
    CountQuery,
    CreateConversation,
    EventCountQuery,
    EventPage,
    EventQuery,
    Health,
    InstancesView,
    LanesView,
    ListQuery,
    MessageAccepted,
    ResizeLane,
    SendMessage,
    StreamQuery,
    WaitQuery,
    WaitResult,
)
from laneway.lanes import LANE_NAMES, LaneSnapshot
from laneway.models import Conversation, Event

C = "/api/conversations"
CID = C + "/{id:cid}"

METRICS = "/metrics"
OPERATIONS: list[Operation] = [
    Operation("GET", "/health", ops.health, "Liveness", "operations", {200: Health}, auth=False),
    Operation("GET", "/ready", ops.ready, "Readiness", "operations", {200: Health, 503: Health},
              auth=False),
    Operation(
        "POST", C, conv.create_conversation, "Create a conversation", "conversations",
        {201: (Conversation, WaitResult), 202: WaitResult, 429: None}, body=CreateConversation,
        descriptions={
            201: "Created; with wait, its run has ended (or none was started)",
            202: "With wait: created, its run still queued or running at wait_timeout_s",
        },
    ),
    Operation(
        "GET", C, conv.list_conversations, "List conversations, newest first", "conversations",
        {200: ConversationPage}, query=ListQuery,
    ),
    Operation(
        "GET", C + "/count", conv.count_conversations, "Count conversations", "conversations",
        {200: Count}, query=CountQuery,
    ),
    Operation("GET", CID, conv.get_conversation, "Get a conversation", "conversations",
              {200: Conversation, 404: None}),
    Operation("DELETE", CID, conv.delete_conversation, "Delete a conversation", "conversations",
              {204: None, 404: None}),
    Operation(
        "POST", CID + "/messages", conv.send_message, "Send a message", "conversations",
        {200: WaitResult, 202: (MessageAccepted, WaitResult), 404: None, 409: None,
         429: None},
        body=SendMessage,
        descriptions={
            200: "With wait: the run that read the message has ended (or none was asked for)",
            202: "Stored; with wait, its run still queued or running at wait_timeout_s",
        },
    ),
    Operation("POST", CID + "/run", conv.run_conversation, "Run a conversation", "conversations",
              {202: Conversation, 404: None, 409: None, 429: None}),
    Operation(
        "GET", CID + "/wait", waits.wait_for_run, "Wait for the run queued or running",
        "conversations", {200: WaitResult, 202: WaitResult, 404: None}, query=WaitQuery,
        descriptions={
            200: "The run has ended, or none was queued or running",
            202: "The run is still queued or running at timeout_s",
        },
    ),
    Operation("POST", CID + "/pause", conv.pause_conversation, "Pause a run", "conversations",
              {200: Conversation, 404: None}),
    Operation("POST", CID + "/interrupt", conv.interrupt_conversation, "Interrupt a run now",
              "conversations", {200: Conversation, 404: None}),
    Operation(
        "GET", CID + "/events", ev.search_events, "Search events", "events",
        {200: EventPage, 404: None}, query=EventQuery,
    ),
    Operation(
        "GET", CID + "/events/count", ev.count_events, "Count events", "events",
        {200: Count, 404: None}, query=EventCountQuery,
    ),
    Operation(
        "GET", CID + "/events/stream", streams.stream_events_sse,
        "Stream events (Server-Sent Events; the same path upgrades to a WebSocket)", "events",
        {200: None, 404: None}, query=StreamQuery, produces=("text/event-stream",),
    ),
    Operation("GET", CID + "/events/{seq:int}", ev.get_event, "Get one event", "events",
              {200: Event, 404: None},
              path_schemas={"seq": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}}),
    Operation("GET", "/api/lanes", ops.get_lanes, "Lane snapshots", "lanes", {200: LanesView}),
    Operation(
        "GET", "/api/lanes/stream", lane_stream.stream_lanes_sse,
        "Stream lane snapshots (Server-Sent Events)", "lanes",
        {200: None}, produces=("text/event-stream",),
        descriptions={
            200: "One snapshot at once, then one a second, each frame's data what GET "
                 "/api/lanes answers, until the client goes or the server stops",
        },
    ),
    Operation(
        "PUT", "/api/lanes/{name}", ops.resize_lane, "Resize a lane live", "lanes",
        {200: LaneSnapshot, 404: None}, body=ResizeLane,
        path_schemas={"name": {"type": "string", "enum": list(LANE_NAMES)}},
    ),
    Operation(
        "GET", "/api/instances", ops.get_instances, "Live instances sharing the store",
        "operations", {200: InstancesView},
    ),
    Operation(
        "GET", METRICS, ops.get_metrics, "Prometheus metrics", "operations",
        {200: None, 503: None}, auth=False, produces=("text/plain",),
    ),
]  # fmt: skip


def _by_method(endpoints: dict[str, Endpoint]) -> Endpoint:
    if len(endpoints) == 1:
        [endpoint] = endpoints.values()
        return endpoint

    async def dispatch(request: Request) -> Response:
        # Starlette answers HEAD wherever GET is allowed.
        method = "GET" if request.method == "HEAD" else request.method
        return await endpoints[method](request)

    return dispatch


# What an instance of role "worker" serves: it takes runs, and answers only
# its orchestrator and its monitoring.
WORKER_PATHS = frozenset({"/health", "/ready", METRICS})


def documented_operations(
    *, keys: bool, metrics_auth: bool, serves_api: bool = True
) -> list[Operation]:
    """The operations as this server answers them: nothing needs a key unless
    keys are configured, and /metrics only when configured so; a worker
    answers only its WORKER_PATHS."""
    return [
        dataclasses.replace(op, auth=keys and (metrics_auth if op.path == METRICS else op.auth))
        for op in OPERATIONS
        if serves_api or op.path in WORKER_PATHS
    ]


def build_routes(openapi_document: bytes, *, serves_api: bool = True) -> list[BaseRoute]:
    async def openapi(request: Request) -> Response:
        return Response(openapi_document, media_type="application/json")

    # One route per path, whatever its methods, so that a 405 lists them all in Allow.
    by_path: dict[str, dict[str, Endpoint]] = {}
    for op in OPERATIONS:
        if serves_api or op.path in WORKER_PATHS:
            by_path.setdefault(op.path, {})[op.method] = op.endpoint
    routes: list[BaseRoute] = [
        Route(path, _by_method(endpoints), methods=list(endpoints), include_in_schema=False)
        for path, endpoints in by_path.items()
    ]
    if not serves_api:
        return routes
    routes.append(WebSocketRoute(CID + "/events/stream", streams.stream_events_ws))
    routes.append(Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False))
    routes += page_routes()
    return routes
