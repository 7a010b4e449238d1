"""Errors as RFC 9457 problem details: one table, one handler.

Every error response is ``application/problem+json`` with a stable ``type`` per kind of error
(``urn:convodb:problem:<name>``, listed in ``docs/http.md``), the HTTP ``status``, a ``title``
that is fixed per type and a ``detail`` that says what to do. Validation problems add
``field`` (and ``limit`` when a limit was broken) or ``errors``.

convodb's errors map to problems by class, most specific first, in :data:`PROBLEMS`; the
framework's own errors (unknown route, wrong method, malformed request, body too large) go
through the same handler, so no error escapes as HTML or as a bare 500.

What a client is told and what the server's log keeps differ for the database's faults: a
``StoreBusyError`` or ``StoreUnavailableError`` carries the driver's text (host, port, database
name, driver error names), which is the operator's business. The client gets the type's fixed
``detail`` and a ``Retry-After``; the log gets the exception and its cause, once per request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from convodb.errors import (
    ApiKeyRevokedError,
    ConflictError,
    ContextBudgetError,
    ConversationExistsError,
    ConversationNotFoundError,
    ConvodbError,
    IdempotencyKeyReuseError,
    LimitExceededError,
    MessageNotFoundError,
    SchemaVersionError,
    StoreBusyError,
    StoreUnavailableError,
    ValidationError,
)

__all__ = [
    "PROBLEMS",
    "Problem",
    "ProblemType",
    "handle_error",
    "problem_response",
    "revoked_key",
    "unauthorized",
]

logger = logging.getLogger("convodb.server")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:convodb:problem:"


@dataclass(frozen=True, slots=True)
class ProblemType:
    """One kind of error: its ``type`` name, HTTP status and fixed title."""

    name: str
    status: int
    title: str
    detail: str | None = None
    """The ``detail`` every client gets, when the error's own message is for the log only."""
    retry_after: int | None = None
    """Seconds sent as ``Retry-After``: when the same request may succeed if retried."""

    @property
    def uri(self) -> str:
        return TYPE_PREFIX + self.name


BAD_REQUEST = ProblemType("bad-request", 400, "Malformed request")
UNAUTHORIZED = ProblemType("unauthorized", 401, "Missing or invalid credentials")
FORBIDDEN = ProblemType("forbidden", 403, "These credentials cannot do that")
NOT_FOUND = ProblemType("not-found", 404, "No such resource")
CONVERSATION_NOT_FOUND = ProblemType("conversation-not-found", 404, "Conversation not found")
MESSAGE_NOT_FOUND = ProblemType("message-not-found", 404, "Message not found")
METHOD_NOT_ALLOWED = ProblemType("method-not-allowed", 405, "Method not allowed")
REQUEST_TIMEOUT = ProblemType("request-timeout", 408, "Request body too slow")
CONFLICT = ProblemType("conflict", 409, "Conflict with stored data")
CONVERSATION_EXISTS = ProblemType("conversation-exists", 409, "Conversation id already taken")
IDEMPOTENCY_KEY_REUSE = ProblemType(
    "idempotency-key-reuse", 409, "Idempotency key reused for a different request"
)
BODY_TOO_LARGE = ProblemType("body-too-large", 413, "Request body too large")
UNSUPPORTED_MEDIA_TYPE = ProblemType("unsupported-media-type", 415, "Unsupported media type")
INVALID_REQUEST = ProblemType("invalid-request", 422, "Request does not match the API schema")
INVALID_INPUT = ProblemType("invalid-input", 422, "Invalid input")
LIMIT_EXCEEDED = ProblemType("limit-exceeded", 422, "A limit was exceeded")
CONTEXT_BUDGET = ProblemType("context-budget-exceeded", 422, "Token budget too small")
STORE_BUSY = ProblemType(
    "store-busy",
    503,
    "Database busy; retry",
    detail="The database is busy with other writes; nothing was stored. Retry in a moment.",
    retry_after=1,
)
STORE_UNAVAILABLE = ProblemType(
    "store-unavailable",
    503,
    "Database unavailable",
    detail="The database is unavailable; nothing was stored. Retry later.",
    retry_after=5,
)
SCHEMA_OUT_OF_DATE = ProblemType(
    "schema-out-of-date",
    503,
    "Database schema out of date",
    detail="The database's schema is not the version this server needs; nothing was stored. "
    "The operator must run `convodb db upgrade` (or deploy the convodb that migrated it). "
    "Retry later.",
    retry_after=30,
)
INTERNAL = ProblemType("internal-error", 500, "Internal server error")

# convodb's errors, most specific class first: the first isinstance match wins.
PROBLEMS: tuple[tuple[type[ConvodbError], ProblemType], ...] = (
    (ContextBudgetError, CONTEXT_BUDGET),
    (LimitExceededError, LIMIT_EXCEEDED),
    (ValidationError, INVALID_INPUT),
    (ConversationNotFoundError, CONVERSATION_NOT_FOUND),
    (MessageNotFoundError, MESSAGE_NOT_FOUND),
    (ConversationExistsError, CONVERSATION_EXISTS),
    (IdempotencyKeyReuseError, IDEMPOTENCY_KEY_REUSE),
    (ConflictError, CONFLICT),
    (StoreBusyError, STORE_BUSY),
    (StoreUnavailableError, STORE_UNAVAILABLE),
    (SchemaVersionError, SCHEMA_OUT_OF_DATE),
)
ALL_TYPES: tuple[ProblemType, ...] = (
    BAD_REQUEST,
    UNAUTHORIZED,
    FORBIDDEN,
    NOT_FOUND,
    CONVERSATION_NOT_FOUND,
    MESSAGE_NOT_FOUND,
    METHOD_NOT_ALLOWED,
    REQUEST_TIMEOUT,
    CONFLICT,
    CONVERSATION_EXISTS,
    IDEMPOTENCY_KEY_REUSE,
    BODY_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    INVALID_REQUEST,
    INVALID_INPUT,
    LIMIT_EXCEEDED,
    CONTEXT_BUDGET,
    STORE_BUSY,
    STORE_UNAVAILABLE,
    SCHEMA_OUT_OF_DATE,
    INTERNAL,
)
_BY_STATUS = {
    400: BAD_REQUEST,
    401: UNAUTHORIZED,
    403: FORBIDDEN,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    408: REQUEST_TIMEOUT,
    413: BODY_TOO_LARGE,
    415: UNSUPPORTED_MEDIA_TYPE,
}


class Problem(HTTPException):
    """An error the server itself raises (authentication, body size): rendered as a problem.

    A subclass of Starlette's ``HTTPException`` so that FastAPI re-raises it unchanged when it
    happens while the body is read.
    """

    def __init__(
        self,
        kind: ProblemType,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(kind.status, detail, headers)
        self.kind = kind
        self.extensions = extensions


def unauthorized(detail: str) -> Problem:
    """A 401 problem, with the challenge that names the scheme to use."""
    return Problem(UNAUTHORIZED, detail, headers={"WWW-Authenticate": 'Bearer realm="convodb"'})


def revoked_key() -> Problem:
    """The answer to a request whose API key is unknown, revoked or wrong."""
    return unauthorized("unknown, revoked or malformed API key")


def problem_response(
    kind: ProblemType,
    detail: str,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": kind.uri,
        "title": kind.title,
        "status": kind.status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    body.update({k: v for k, v in extensions.items() if v is not None})
    if kind.retry_after is not None:
        headers = {"Retry-After": str(kind.retry_after), **(headers or {})}
    return JSONResponse(body, status_code=kind.status, headers=headers, media_type=PROBLEM_JSON)


def _json_error(error: Mapping[str, Any], document: Any) -> str:
    """What is wrong with a body that is not JSON, and where: ``Expecting value at line 3,
    column 14``. FastAPI reports the offset into the decoded document; people count lines."""
    reason = str(error.get("ctx", {}).get("error") or "not valid JSON")
    location = error.get("loc", ())
    offset = location[1] if len(location) > 1 else None
    if not isinstance(document, str) or not isinstance(offset, int):
        return reason
    line = document.count("\n", 0, offset) + 1
    column = offset - document.rfind("\n", 0, offset)
    return f"{reason} at line {line}, column {column}"


def _validation_errors(exc: RequestValidationError) -> tuple[ProblemType, list[dict[str, Any]]]:
    errors = []
    kind = INVALID_REQUEST
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            kind = BAD_REQUEST
            message = _json_error(error, exc.body)
            errors.append({"location": "body", "message": message})
            continue
        location = [str(part) for part in error.get("loc", ())]
        errors.append({"location": ".".join(location), "message": str(error.get("msg", ""))})
    return kind, errors


def _not_found(request: Request) -> str:
    """The 404 detail for a path no route serves; it names the path without a trailing slash
    when that one exists (URLs never redirect: a 307 would re-send the credentials)."""
    path = request.url.path
    stripped = path.rstrip("/")
    if stripped and stripped != path:
        scope = {**request.scope, "path": stripped}
        if any(route.matches(scope)[0] is not Match.NONE for route in request.app.router.routes):
            return f"no route {path!r}: paths take no trailing slash; use {stripped!r}"
    return f"no route {path!r}; the endpoints are listed at /docs"


async def handle_error(request: Request, exc: Exception) -> JSONResponse:
    """The one exception handler: every error the app raises becomes a problem response."""
    instance = request.url.path
    if isinstance(exc, ApiKeyRevokedError):  # revoked since the server verified it
        request.app.state.authenticator.forget(exc.key_id)
        exc = revoked_key()
    if isinstance(exc, ConvodbError):
        kind = next((k for cls, k in PROBLEMS if isinstance(exc, cls)), INTERNAL)
        if kind is INTERNAL:
            logger.error("unmapped convodb error on %s", instance, exc_info=exc)
            return problem_response(INTERNAL, "The server failed; see its log.", instance=instance)
        if kind.detail is not None:
            # The message (and its cause) name the database's host, driver and error: the
            # operator's log gets them, the client the type's fixed detail.
            logger.warning(
                "%s %s answered %s %s: %s",
                request.method,
                instance,
                kind.status,
                kind.name,
                exc,
                exc_info=exc,
            )
            return problem_response(kind, kind.detail, instance=instance)
        return problem_response(
            kind,
            str(exc),
            instance=instance,
            field=getattr(exc, "field", None),
            limit=getattr(exc, "limit", None),
        )
    if isinstance(exc, Problem):
        return problem_response(
            exc.kind, exc.detail, instance=instance, headers=exc.headers, **exc.extensions
        )
    if isinstance(exc, RequestValidationError):
        kind, errors = _validation_errors(exc)
        detail = "; ".join(f"{e['location']}: {e['message']}" for e in errors)
        if kind is BAD_REQUEST:
            detail = f"the body is not valid JSON: {errors[0]['message']}"
        return problem_response(kind, detail, instance=instance, errors=errors)
    if isinstance(exc, HTTPException):
        kind = _BY_STATUS.get(exc.status_code, BAD_REQUEST if exc.status_code < 500 else INTERNAL)
        detail = _not_found(request) if kind is NOT_FOUND else str(exc.detail)
        return problem_response(
            kind, detail, instance=instance, headers=getattr(exc, "headers", None)
        )
    logger.error("unhandled error on %s", instance, exc_info=exc)
    return problem_response(INTERNAL, "The server failed; see its log.", instance=instance)
