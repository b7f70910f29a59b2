"""Conversation routes: create, list, count, get, delete, messages, run, pause,
interrupt (waiting for a run is in ``waits``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from laneway import waiting
from laneway.api.encoding import decode_body, decode_query, given, json_response
from laneway.api.routing import service_of, settings_of
from laneway.api.schemas import (
    ConversationPage,
    Count,
    CountQuery,
    CreateConversation,
    ListQuery,
    MessageAccepted,
    SendMessage,
)
from laneway.api.waits import answer


async def create_conversation(request: Request) -> Response:
    body = await decode_body(request, CreateConversation, settings_of(request).max_body_bytes)
    service = service_of(request)
    conversation = await service.create(
        agent=body.agent,
        title=body.title,
        max_steps=body.max_steps,
        initial_message=body.initial_message,
        run=body.run,
    )
    location = {"Location": f"/api/conversations/{conversation.id}"}
    if body.wait:
        wait = waiting.after_create(service, conversation)
        return await answer(request, wait, body.wait_timeout_s, ended_code=201, headers=location)
    return json_response(conversation, 201, headers=location)


async def list_conversations(request: Request) -> Response:
    query = decode_query(request, ListQuery)
    items, next_cursor = await service_of(request).list_conversations(
        status=given(query.status), limit=query.limit, cursor=given(query.cursor)
    )
    return json_response(ConversationPage(items, next_cursor))


async def count_conversations(request: Request) -> Response:
    query = decode_query(request, CountQuery)
    return json_response(
        Count(await service_of(request).count_conversations(status=given(query.status)))
    )


async def get_conversation(request: Request) -> Response:
    return json_response(await service_of(request).get(request.path_params["id"]))


async def delete_conversation(request: Request) -> Response:
    await service_of(request).delete(request.path_params["id"])
    return Response(status_code=204)


async def send_message(request: Request) -> Response:
    body = await decode_body(request, SendMessage, settings_of(request).max_body_bytes)
    service = service_of(request)
    event, conversation = await service.send_message(
        request.path_params["id"], body.content, run=body.run, if_running=body.if_running
    )
    if body.wait:
        wait = waiting.after_message(service, event, run=body.run)
        return await answer(request, wait, body.wait_timeout_s)
    return json_response(MessageAccepted(event, conversation), 202)


async def run_conversation(request: Request) -> Response:
    return json_response(await service_of(request).run(request.path_params["id"]), 202)


async def pause_conversation(request: Request) -> Response:
    return json_response(await service_of(request).pause(request.path_params["id"]))


async def interrupt_conversation(request: Request) -> Response:
    return json_response(await service_of(request).interrupt(request.path_params["id"]))
