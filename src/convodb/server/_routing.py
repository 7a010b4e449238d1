"""What every route module shares: the caller, the common parameters, the JSON response, and
the OpenAPI responses of an operation.

Each concern's routes live in a module of their own (``_conversations``, ``_messages``,
``_agent_input``, ``_health``), each with one ``add_*_routes(app, ...)`` function that puts them
on the app itself, their paths spelled out. They are not ``APIRouter`` objects: FastAPI's
``include_router`` adds the router as one route of the app's (an ``_IncludedRouter``) that
matches every request against its own routes again, a second pass per request, and hides the
routes from ``app.routes``, which the 404 problem reads to name a path without its trailing
slash (see ``_problems``).

Route modules import no ``from __future__ import annotations``: FastAPI reads the parameters'
annotations at run time, and a page-size parameter is an alias local to its ``add_*_routes``,
which a string annotation could not find.
"""

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request, Response
from pydantic import BaseModel
from pydantic_core import to_json

from convodb import ConversationService, Database

from ._auth import Authenticator
from ._problems import (
    BAD_REQUEST,
    BODY_TOO_LARGE,
    FORBIDDEN,
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
)
from ._schemas import CONVERSATION_ID_PATTERN
from ._session import request_session
from ._settings import Settings

__all__ = [
    "BODY_PROBLEMS",
    "STORE_PROBLEMS",
    "Authenticated",
    "Caller",
    "ConversationId",
    "Cursor",
    "get_database",
    "json_response",
    "ok",
    "page_size",
    "problems",
    "v1",
]

PROBLEM_REF = "#/components/schemas/Problem"
# What an operation that reads a JSON body can answer about the body itself (see _body).
BODY_PROBLEMS = (BAD_REQUEST, REQUEST_TIMEOUT, BODY_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE)
# The database's faults, which any operation that touches it can answer.
STORE_PROBLEMS = (STORE_BUSY, STORE_UNAVAILABLE, SCHEMA_OUT_OF_DATE)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a ``/v1`` request acts as, and the service it calls, on the request's session.

    A route that works through another service passes it ``service.api_key_id``: the
    request's API key may still need its check (see ``_auth``).
    """

    user: str
    service: ConversationService


# Dependencies are async: FastAPI runs a plain `def` dependency in its thread pool, a thread
# hop on every request. They find the app's database, settings and authenticator on its state,
# where create_app puts them.
async def get_database(request: Request) -> Database:
    db: Database | None = request.app.state.database
    if db is None:  # pragma: no cover - only when a server skips the lifespan
        raise RuntimeError("create_app(database=None) needs its lifespan to run")
    return db


async def get_caller(request: Request) -> Caller:
    """Authentication, then the service; one session shared by both (see ``_session``).

    One dependency, not a chain: each dependency FastAPI solves costs time per request.
    """
    state = request.app.state
    authenticator: Authenticator = state.authenticator
    settings: Settings = state.settings
    session = request_session(request, await get_database(request))
    who = await authenticator.identify(request, session)
    service = ConversationService(session, limits=settings.limits, api_key_id=who.api_key_id)
    return Caller(who.user, service)


Authenticated = Annotated[Caller, Depends(get_caller)]
ConversationId = Annotated[
    str,
    Path(
        description="The conversation's id.",
        pattern=CONVERSATION_ID_PATTERN,
        examples=["0193a8c2-7d4e-7b1a-9c3f-2e5d8a1b4c6f"],
    ),
]
Cursor = Annotated[
    str | None,
    Query(max_length=1024, description="`next_cursor` of the previous page."),
]


def page_size(settings: Settings) -> Any:
    """The ``limit`` query parameter of a list: 1 to the configured page size.

    Use it as ``Annotated[int, page_size(settings)]``.
    """
    return Query(ge=1, le=settings.limits.max_page_size, description="Page size.")


def json_response(
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


def ok(model: type[BaseModel], status: int = 200) -> dict[int | str, dict[str, Any]]:
    """OpenAPI for the success response of a route that returns :func:`json_response` of
    ``model``."""
    return {status: {"model": model}}


def problems(*kinds: ProblemType) -> dict[int | str, dict[str, Any]]:
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


def v1(*kinds: ProblemType) -> dict[int | str, dict[str, Any]]:
    """Responses of a ``/v1`` operation: these problems plus those every one of them can give."""
    return problems(
        UNAUTHORIZED,
        FORBIDDEN,
        *kinds,
        INVALID_INPUT,
        LIMIT_EXCEEDED,
        INVALID_REQUEST,
        *STORE_PROBLEMS,
    )
