"""The conversation routes: create, list, get, update, delete."""

from typing import Annotated

from fastapi import Body, FastAPI, Response

from ._problems import CONVERSATION_NOT_FOUND
from ._routing import (
    BODY_PROBLEMS,
    Authenticated,
    ConversationId,
    Cursor,
    json_response,
    ok,
    page_size,
    v1,
)
from ._schemas import (
    ConversationCreate,
    ConversationOut,
    ConversationPage,
    ConversationUpdate,
    conversation_out,
)
from ._settings import Settings

__all__ = ["add_conversation_routes"]


def add_conversation_routes(app: FastAPI, settings: Settings) -> None:
    Limit = Annotated[int, page_size(settings)]

    @app.post(
        "/v1/conversations",
        status_code=201,
        tags=["conversations"],
        summary="Create a conversation",
        responses=ok(ConversationOut, 201) | v1(*BODY_PROBLEMS),
    )
    async def create_conversation(
        caller: Authenticated,
        body: Annotated[ConversationCreate | None, Body()] = None,
    ) -> Response:
        """Create a conversation owned by the caller. Its id is a new time-ordered UUID."""
        body = body or ConversationCreate()
        conversation = await caller.service.create_conversation(
            caller.user, title=body.title, metadata=body.metadata
        )
        location = f"/v1/conversations/{conversation.id}"
        return json_response(conversation_out(conversation), 201, headers={"Location": location})

    @app.get(
        "/v1/conversations",
        tags=["conversations"],
        summary="List conversations",
        responses=ok(ConversationPage) | v1(),
    )
    async def list_conversations(
        caller: Authenticated, limit: Limit = 50, cursor: Cursor = None
    ) -> Response:
        """The caller's conversations, most recently active first, one page at a time."""
        page = await caller.service.list_conversations(caller.user, limit=limit, cursor=cursor)
        items = [conversation_out(c) for c in page.items]
        return json_response({"items": items, "next_cursor": page.next_cursor})

    @app.get(
        "/v1/conversations/{conversation_id}",
        tags=["conversations"],
        summary="Get a conversation",
        responses=ok(ConversationOut) | v1(CONVERSATION_NOT_FOUND),
    )
    async def get_conversation(caller: Authenticated, conversation_id: ConversationId) -> Response:
        """One conversation. Another user's conversation is a 404, exactly like a missing one."""
        conversation = await caller.service.get_conversation(conversation_id, caller.user)
        return json_response(conversation_out(conversation))

    @app.patch(
        "/v1/conversations/{conversation_id}",
        tags=["conversations"],
        summary="Update a conversation",
        responses=ok(ConversationOut) | v1(*BODY_PROBLEMS, CONVERSATION_NOT_FOUND),
    )
    async def update_conversation(
        caller: Authenticated,
        conversation_id: ConversationId,
        body: ConversationUpdate,
    ) -> Response:
        """Change the title and/or replace the metadata; fields left out are kept."""
        changes = {name: getattr(body, name) for name in body.model_fields_set}
        conversation = await caller.service.update_conversation(
            conversation_id, caller.user, **changes
        )
        return json_response(conversation_out(conversation))

    @app.delete(
        "/v1/conversations/{conversation_id}",
        status_code=204,
        response_class=Response,
        tags=["conversations"],
        summary="Delete a conversation",
        responses=v1(CONVERSATION_NOT_FOUND),
    )
    async def delete_conversation(
        caller: Authenticated, conversation_id: ConversationId
    ) -> Response:
        """Delete the conversation and all its messages."""
        await caller.service.delete_conversation(conversation_id, caller.user)
        return Response(status_code=204)
