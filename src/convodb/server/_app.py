"""``create_app``: the FastAPI application, its routes and its OpenAPI document.

Routes translate HTTP into :class:`convodb.ConversationService` calls and back; the user is
always the authenticated one (see ``_auth``), never taken from the path or the body.
"""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from pydantic_core import to_json
from starlette.exceptions import HTTPException

from convodb import ConversationService, ConvodbError, Database

from ._auth import Authenticator
from ._body import BodyLimitMiddleware
from ._problems import (
    BAD_REQUEST,
    BODY_TOO_LARGE,
    CONFLICT,
    CONTEXT_BUDGET,
    CONVERSATION_NOT_FOUND,
    FORBIDDEN,
    IDEMPOTENCY_KEY_REUSE,
    INVALID_INPUT,
    INVALID_REQUEST,
    LIMIT_EXCEEDED,
    PROBLEM_JSON,
    REQUEST_TIMEOUT,
    SCHEMA_OUT_OF_DATE,
    STORE_BUSY,
    STORE_UNAVAILABLE,
    UNAUTHORIZED,
    UNSUPPORTED_MEDIA_TYPE,
    ProblemType,
    handle_error,
)
from ._schemas import (
    ATTACHMENT_MEDIA_TYPES,
    CONVERSATION_ID_PATTERN,
    SHA256_PATTERN,
    AgentInputOut,
    AgentInputRequest,
    AppendRequest,
    AppendResponse,
    ConversationCreate,
    ConversationOut,
    ConversationPage,
    ConversationUpdate,
    Health,
    MessagePage,
    ProblemOut,
    SummaryCreate,
    SummaryOut,
    agent_input_out,
    conversation_out,
    message_out,
    summary_out,
)
from ._session import SessionMiddleware, request_session
from ._settings import USER_HEADER, Settings

__all__ = ["create_app"]

logger = logging.getLogger("convodb.server")

API_VERSION = "1"
DOCS_ASSETS_URL = "/docs/assets"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"
PROBLEM_REF = "#/components/schemas/Problem"
# What an operation that reads a JSON body can answer about the body itself (see _body).
BODY_PROBLEMS = (BAD_REQUEST, REQUEST_TIMEOUT, BODY_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE)
# The database's faults, which any operation that touches it can answer.
STORE_PROBLEMS = (STORE_BUSY, STORE_UNAVAILABLE, SCHEMA_OUT_OF_DATE)
# An attachment is addressed by its content's digest: a URL's bytes never change, so clients
# may keep them for good. Private: the response needs the user's credentials.
ATTACHMENT_CACHE_CONTROL = "private, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a ``/v1`` request acts as, and the service it calls, on the request's session."""

    user: str
    service: ConversationService


def create_app(settings: Settings | None = None, database: Database | None = None) -> FastAPI:
    """The HTTP service as an ASGI app.

    ```python
    app = create_app(Settings(database_url="sqlite:///chat.db"))
    # uvicorn: convodb serve, or uvicorn --factory convodb.server:create_app
    ```

    Args:
        settings: the configuration; by default read from ``CONVODB_*`` variables.
        database: an open database to use instead of opening ``settings.database_url`` at
            start-up. Its owner disposes of it. Tests pass one, because ``httpx.ASGITransport``
            does not run the app's lifespan.
    """
    settings = settings or Settings.from_env()
    authenticator = Authenticator(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.dev:
            logger.warning(
                "DEV MODE: requests without credentials are accepted from loopback clients "
                "and act as the %s header's user. Never expose this server.",
                USER_HEADER,
            )
        if database is not None:
            yield
            return
        owned = settings.database()
        try:
            if settings.create_schema:
                await owned.create_all(api_keys=settings.api_keys)
            app.state.database = owned
            yield
        finally:
            await owned.dispose()

    # FastAPIOffline: FastAPI whose /docs and /redoc pages load Swagger UI and ReDoc from
    # files shipped in the fastapi-offline package, not from a CDN, so they work offline.
    app = FastAPIOffline(
        title="convodb",
        version=API_VERSION,
        summary="Conversation storage for LLM agents: ordered, per-user, atomic.",
        description=_DESCRIPTION,
        lifespan=lifespan,
        static_url=DOCS_ASSETS_URL,
        # Swagger UI would otherwise send the document's URL to swagger.io's online validator
        # and load its badge from there.
        swagger_ui_parameters={"validatorUrl": None},
        # One URL per resource: a path with a trailing slash is a 404 problem that names the
        # right path, not an empty-bodied 307 (which clients follow by re-sending the body and
        # the credentials, or not at all).
        redirect_slashes=False,
    )
    app.state.database = database
    app.state.settings = settings
    for error in (ConvodbError, HTTPException, RequestValidationError, Exception):
        app.add_exception_handler(error, handle_error)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout
    )
    app.add_middleware(SessionMiddleware)

    # Dependencies are async: FastAPI runs a plain `def` dependency in its thread pool, a
    # thread hop on every request.
    async def get_database(request: Request) -> Database:
        db: Database | None = request.app.state.database
        if db is None:  # pragma: no cover - only when a server skips the lifespan
            raise RuntimeError("create_app(database=None) needs its lifespan to run")
        return db

    async def get_caller(request: Request) -> Caller:
        """Authentication, then the service; one session shared by both (see ``_session``).

        One dependency, not a chain: each dependency FastAPI solves costs time per request.
        """
        session = request_session(request, await get_database(request))
        user = await authenticator.user(request, session)
        return Caller(user, ConversationService(session, limits=settings.limits))

    Authenticated = Annotated[Caller, Depends(get_caller)]
    ConversationId = Annotated[
        str,
        Path(
            description="The conversation's id.",
            pattern=CONVERSATION_ID_PATTERN,
            examples=["0193a8c2-7d4e-7b1a-9c3f-2e5d8a1b4c6f"],
        ),
    ]
    Limit = Annotated[
        int,
        Query(ge=1, le=settings.limits.max_page_size, description="Page size."),
    ]
    Cursor = Annotated[
        str | None,
        Query(max_length=1024, description="`next_cursor` of the previous page."),
    ]

    # Routes go on the app itself, their paths spelled out: an included APIRouter adds a
    # layer that matches every request against its routes twice.
    @app.post(
        "/v1/conversations",
        status_code=201,
        tags=["conversations"],
        summary="Create a conversation",
        responses=_ok(ConversationOut, 201) | _v1(*BODY_PROBLEMS),
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
        return _json(conversation_out(conversation), 201, headers={"Location": location})

    @app.get(
        "/v1/conversations",
        tags=["conversations"],
        summary="List conversations",
        responses=_ok(ConversationPage) | _v1(),
    )
    async def list_conversations(
        caller: Authenticated, limit: Limit = 50, cursor: Cursor = None
    ) -> Response:
        """The caller's conversations, most recently active first, one page at a time."""
        page = await caller.service.list_conversations(caller.user, limit=limit, cursor=cursor)
        items = [conversation_out(c) for c in page.items]
        return _json({"items": items, "next_cursor": page.next_cursor})

    @app.get(
        "/v1/conversations/{conversation_id}",
        tags=["conversations"],
        summary="Get a conversation",
        responses=_ok(ConversationOut) | _v1(CONVERSATION_NOT_FOUND),
    )
    async def get_conversation(caller: Authenticated, conversation_id: ConversationId) -> Response:
        """One conversation. Another user's conversation is a 404, exactly like a missing one."""
        conversation = await caller.service.get_conversation(conversation_id, caller.user)
        return _json(conversation_out(conversation))

    @app.patch(
        "/v1/conversations/{conversation_id}",
        tags=["conversations"],
        summary="Update a conversation",
        responses=_ok(ConversationOut) | _v1(*BODY_PROBLEMS, CONVERSATION_NOT_FOUND),
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
        return _json(conversation_out(conversation))

    @app.delete(
        "/v1/conversations/{conversation_id}",
        status_code=204,
        response_class=Response,
        tags=["conversations"],
        summary="Delete a conversation",
        responses=_v1(CONVERSATION_NOT_FOUND),
    )
    async def delete_conversation(
        caller: Authenticated, conversation_id: ConversationId
    ) -> Response:
        """Delete the conversation and all its messages."""
        await caller.service.delete_conversation(conversation_id, caller.user)
        return Response(status_code=204)

    @app.post(
        "/v1/conversations/{conversation_id}/messages",
        status_code=201,
        tags=["messages"],
        summary="Append messages",
        responses=_ok(AppendResponse, 201)
        | _v1(*BODY_PROBLEMS, CONVERSATION_NOT_FOUND, IDEMPOTENCY_KEY_REUSE),
    )
    async def append_messages(
        caller: Authenticated,
        conversation_id: ConversationId,
        body: AppendRequest,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                pattern=IDEMPOTENCY_KEY_PATTERN,
                description="Makes the append safe to retry: a retry with the same key and "
                "body returns the original response and stores nothing; the same key with "
                "a different body is a 409. 1-200 printable ASCII characters.",
                examples=["turn-7f3a"],
            ),
        ] = None,
    ) -> Response:
        """Append a batch atomically: every message is stored, in order, or none is."""
        messages = body.model_dump(exclude_unset=True)["messages"]  # one call, not one a message
        stored = await caller.service.save_conversation_messages(
            conversation_id, caller.user, messages, idempotency_key=idempotency_key
        )
        return _json({"messages": [message_out(m) for m in stored]}, 201)

    @app.get(
        "/v1/conversations/{conversation_id}/messages",
        tags=["messages"],
        summary="Read messages",
        responses=_ok(MessagePage) | _v1(CONVERSATION_NOT_FOUND),
    )
    async def list_messages(
        caller: Authenticated,
        conversation_id: ConversationId,
        limit: Limit = 100,
        order: Annotated[
            Literal["asc", "desc"],
            Query(description="`asc`: oldest first; `desc`: newest first."),
        ] = "asc",
        cursor: Cursor = None,
        after_seq: Annotated[
            int | None,
            Query(
                ge=0,
                le=2**62,
                description="Ascending order only, without a cursor: start after this seq, "
                "to follow a live conversation.",
            ),
        ] = None,
    ) -> Response:
        """One page of the conversation's messages, in either direction, by cursor."""
        page = await caller.service.list_messages(
            conversation_id,
            caller.user,
            limit=limit,
            order=order,
            cursor=cursor,
            after_seq=after_seq,
        )
        items = [message_out(m) for m in page.items]
        return _json({"items": items, "next_cursor": page.next_cursor})

    @app.get(
        "/v1/conversations/{conversation_id}/attachments/{sha256}",
        response_class=Response,
        tags=["messages"],
        summary="Get an attachment's bytes",
        responses=_attachment_responses() | _v1(CONVERSATION_NOT_FOUND),
    )
    async def get_attachment(
        caller: Authenticated,
        conversation_id: ConversationId,
        sha256: Annotated[
            str,
            Path(
                description="The digest: a stored part's `attachment`.",
                pattern=SHA256_PATTERN,
                examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
            ),
        ],
        if_none_match: Annotated[
            str | None,
            Header(
                alias="If-None-Match",
                max_length=8192,
                description="ETags the client holds; a match is a 304 without the bytes.",
            ),
        ] = None,
    ) -> Response:
        """The binary data of an image, file or audio part, in its stored media type.

        Messages are read back without their parts' `data`; each such part names its data by
        `attachment`, the SHA-256 of the bytes, stored once per conversation. A digest the
        conversation does not hold is a 404, exactly like a missing conversation. Everything
        but an image is sent as a download (`Content-Disposition: attachment`), so that no
        stored document can run as a page of this server's origin.
        """
        attachment = await caller.service.get_attachment(conversation_id, caller.user, sha256)
        etag = f'"{attachment.sha256}"'
        headers = {
            "ETag": etag,
            "Cache-Control": ATTACHMENT_CACHE_CONTROL,
            "X-Content-Type-Options": "nosniff",
            # Should a browser render it anyway: no scripts, no requests, no same origin.
            "Content-Security-Policy": "default-src 'none'; sandbox",
        }
        if if_none_match is not None and _etag_matches(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        if not attachment.media_type.startswith("image/"):
            headers["Content-Disposition"] = "attachment"
        return Response(attachment.data, media_type=attachment.media_type, headers=headers)

    @app.post(
        "/v1/conversations/{conversation_id}/agent-input",
        tags=["agent input"],
        summary="Build the next model request",
        responses=_ok(AgentInputOut) | _v1(*BODY_PROBLEMS, CONVERSATION_NOT_FOUND, CONTEXT_BUDGET),
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
        return _json(agent_input_out(result))

    @app.post(
        "/v1/conversations/{conversation_id}/summaries",
        status_code=201,
        tags=["agent input"],
        summary="Store a summary (compaction)",
        responses=_ok(SummaryOut, 201) | _v1(*BODY_PROBLEMS, CONVERSATION_NOT_FOUND, CONFLICT),
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
        return _json(summary_out(summary), 201)

    @app.get("/healthz", response_model=Health, tags=["health"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        """The process is up. Touches nothing else."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["health"],
        summary="Readiness",
        responses=_problems(*STORE_PROBLEMS),
    )
    async def readyz(db: Annotated[Database, Depends(get_database)]) -> dict[str, str]:
        """The database answers and has the schema this server needs; 503 otherwise."""
        await db.ping()
        return {"status": "ready"}

    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app


_DESCRIPTION = """
convodb stores LLM conversations: ordered by a per-conversation `seq`, isolated per user,
appended atomically, safe to retry.

**Authentication**: `Authorization: Bearer <token>` with a convodb API key (`cdb_...`, made
with `convodb keys create`) or a JWT (the user is its `sub`). A service key names the user in
the `X-Convodb-User` header. Another user's conversation answers exactly like a missing one.

**Errors** are RFC 9457 `application/problem+json` with a stable `type`.
"""


def _json(
    content: dict[str, Any], status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """``content`` as the JSON response, encoded once by pydantic's serializer.

    Routes return this rather than a dict checked against a ``response_model``: FastAPI would
    validate every response against the model before encoding it, which costs as much as the
    encoding. The dicts come from the ``*_out`` functions of ``_schemas``, which build exactly
    the documented shape (the schema tests check responses against the OpenAPI document), and
    datetimes encode as they did through the model (ISO 8601, ``Z`` for UTC).
    """
    return Response(
        to_json(content), status_code=status_code, headers=headers, media_type="application/json"
    )


def _ok(model: type[BaseModel], status: int = 200) -> dict[int | str, dict[str, Any]]:
    """OpenAPI for the success response of a route that returns :func:`_json` of ``model``."""
    return {status: {"model": model}}


def _problems(*kinds: ProblemType) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for these problem types: one entry per status, an example per type."""
    responses: dict[int | str, dict[str, Any]] = {}
    for kind in kinds:
        entry = responses.setdefault(
            kind.status,
            {
                "description": kind.title,
                "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}, "examples": {}}},
            },
        )
        if kind.title not in entry["description"]:
            entry["description"] += f"; {kind.title}"
        entry["content"][PROBLEM_JSON]["examples"][kind.name] = {
            "summary": kind.title,
            "value": {
                "type": kind.uri,
                "title": kind.title,
                "status": kind.status,
                "detail": kind.detail or "What went wrong and what to do.",
            },
        }
    return responses


def _v1(*kinds: ProblemType) -> dict[int | str, dict[str, Any]]:
    """Responses of a ``/v1`` operation: these problems plus those every one of them can give."""
    return _problems(
        UNAUTHORIZED,
        FORBIDDEN,
        *kinds,
        INVALID_INPUT,
        LIMIT_EXCEEDED,
        INVALID_REQUEST,
        *STORE_PROBLEMS,
    )


def _attachment_responses() -> dict[int | str, dict[str, Any]]:
    """OpenAPI for the attachment route's 200 (bytes, in any stored media type) and 304."""

    def header(description: str) -> dict[str, Any]:
        return {"description": description, "schema": {"type": "string"}}

    cache = {
        "ETag": header("The digest, quoted: a strong validator for `If-None-Match`."),
        "Cache-Control": header(f"`{ATTACHMENT_CACHE_CONTROL}`: the bytes never change."),
    }
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        200: {
            "description": "The bytes, as their stored media type.",
            "content": dict.fromkeys(ATTACHMENT_MEDIA_TYPES, binary),
            "headers": cache
            | {
                "Content-Disposition": header("`attachment` for everything but images."),
                "X-Content-Type-Options": header("`nosniff`."),
                "Content-Security-Policy": header("`default-src 'none'; sandbox`."),
            },
        },
        304: {"description": "Not modified: `If-None-Match` holds its ETag.", "headers": cache},
    }


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` value matches ``etag`` (RFC 9110 13.1.2: ``*`` matches,
    and the comparison is weak, so ``W/"x"`` matches ``"x"``)."""
    tags = (tag.strip() for tag in if_none_match.split(","))
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in tags)


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document, with every error as ``application/problem+json`` and auth declared.

    FastAPI documents its own 422 as ``application/json`` with a shape this app never sends;
    here it points at the one ``Problem`` schema instead.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        components = document.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        problem = ProblemOut.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(problem.pop("$defs", {}))
        schemas["Problem"] = problem
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        components["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A convodb API key (cdb_...) or a JWT whose `sub` is the user.",
            },
            "user": {
                "type": "apiKey",
                "in": "header",
                "name": USER_HEADER,
                "description": "With a service API key: the user the request acts as.",
            },
        }
        for path, operations in document["paths"].items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "application/json" in responses.get("422", {}).get("content", {}):
                    responses["422"] = _problems(INVALID_INPUT, INVALID_REQUEST)[422]
                if path.startswith("/v1/"):
                    operation["security"] = [{"bearer": []}, {"bearer": [], "user": []}]
        app.openapi_schema = document
        return document

    return openapi
