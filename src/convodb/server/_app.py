"""``create_app``: the FastAPI application, its middleware, error handling and OpenAPI document.

Routes translate HTTP into :class:`convodb.ConversationService` calls and back; the user is
always the authenticated one (see ``_auth``), never taken from the path or the body. They live
in one module per concern, each adding its routes to the app (see ``_routing``):
``_conversations``, ``_messages`` (and attachments), ``_agent_input`` (and summaries),
``_health``.
"""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from convodb import ConvodbError, Database

from ._agent_input import add_agent_input_routes
from ._auth import Authenticator
from ._body import BodyLimitMiddleware
from ._conversations import add_conversation_routes
from ._health import add_health_routes
from ._me import add_me_routes
from ._messages import add_message_routes
from ._problems import INVALID_INPUT, INVALID_REQUEST, handle_error
from ._routing import problems
from ._schemas import ProblemOut
from ._session import SessionMiddleware
from ._settings import USER_HEADER, Settings

__all__ = ["create_app"]

logger = logging.getLogger("convodb.server")

API_VERSION = "1"
DOCS_ASSETS_URL = "/docs/assets"


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
    app.state.authenticator = Authenticator(settings)
    for error in (ConvodbError, HTTPException, RequestValidationError, Exception):
        app.add_exception_handler(error, handle_error)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout
    )
    app.add_middleware(SessionMiddleware)

    # The order of the routes is the order of the OpenAPI document's paths.
    add_conversation_routes(app, settings)
    add_message_routes(app, settings)
    add_agent_input_routes(app, settings)
    add_me_routes(app)
    add_health_routes(app)

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
                    responses["422"] = problems(INVALID_INPUT, INVALID_REQUEST)[422]
                if path.startswith("/v1/"):
                    operation["security"] = [{"bearer": []}, {"bearer": [], "user": []}]
        app.openapi_schema = document
        return document

    return openapi
