"""The agent-input routes: the next model request's input, and the summaries it starts from."""

from typing import Annotated, Any

from fastapi import Body, FastAPI, Response

from ._problems import CONFLICT, CONTEXT_BUDGET, CONVERSATION_NOT_FOUND
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
    AgentInputOut,
    AgentInputRequest,
    SummaryCreate,
    SummaryOut,
    SummaryPage,
    agent_input_out,
    summary_out,
)
from ._settings import Settings

__all__ = ["add_agent_input_routes"]


def add_agent_input_routes(app: FastAPI, settings: Settings) -> None:
    Limit = Annotated[int, page_size(settings)]

    @app.post(
        "/v1/conversations/{conversation_id}/agent-input",
        tags=["agent input"],
        summary="Build the next model request",
        responses=ok(AgentInputOut) | v1(*BODY_PROBLEMS, CONVERSATION_NOT_FOUND, CONTEXT_BUDGET),
    )
    async def agent_input(
        caller: Authenticated,
        conversation_id: ConversationId,
        body: Annotated[AgentInputRequest | None, Body()] = None,
    ) -> Response:
        """The newest history that fits `max_messages` / `max_tokens`, as the keyword
        arguments of a model API's call: forward `request` as it is.

        The window is [system prompt, newest summary, newest messages after it, user message];
        tool calls and their results are kept together, stored parts carry their data again,
        and each API gets the reasoning its own models produced. Nothing is stored (POST only
        because the prompt and message can be long).
        """
        body = body or AgentInputRequest()
        user_message: str | list[dict[str, Any]] | None
        if isinstance(body.user_message, list):  # parts go on as dicts: the service checks them
            user_message = [part.model_dump(exclude_unset=True) for part in body.user_message]
        else:
            user_message = body.user_message
        result = await caller.service.get_agent_input(
            conversation_id,
            caller.user,
            system_prompt=body.system_prompt,
            user_message=user_message,
            max_messages=body.max_messages,
            max_tokens=body.max_tokens,
            format=body.format,
        )
        return json_response(agent_input_out(result))

    @app.post(
        "/v1/conversations/{conversation_id}/summaries",
        status_code=201,
        tags=["agent input"],
        summary="Store a summary (compaction)",
        responses=ok(SummaryOut, 201) | v1(*BODY_PROBLEMS, CONVERSATION_NOT_FOUND, CONFLICT),
    )
    async def save_summary(
        caller: Authenticated, conversation_id: ConversationId, body: SummaryCreate
    ) -> Response:
        """Store a summary you made of messages 1..`upto_seq`; agent input then starts with it.

        The messages stay stored and readable. A new summary must cover more than the last one
        (else 409).
        """
        summary = await caller.service.save_summary(
            conversation_id,
            caller.user,
            body.content,
            upto_seq=body.upto_seq,
            metadata=body.metadata,
        )
        return json_response(summary_out(summary), 201)

    @app.get(
        "/v1/conversations/{conversation_id}/summaries",
        tags=["agent input"],
        summary="List summaries",
        responses=ok(SummaryPage) | v1(CONVERSATION_NOT_FOUND),
    )
    async def list_summaries(
        caller: Authenticated,
        conversation_id: ConversationId,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Response:
        """Every summary stored for the conversation, newest (highest `upto_seq`) first, one
        page at a time. The newest is the one agent input starts from."""
        page = await caller.service.list_summaries(
            conversation_id, caller.user, limit=limit, cursor=cursor
        )
        items = [summary_out(s) for s in page.items]
        return json_response({"items": items, "next_cursor": page.next_cursor})
