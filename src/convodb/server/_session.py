"""The request's database session: made by the route's one dependency, ended after the app.

Every ``/v1`` route needs the same three things: the database, a session on it, and the
authenticated user. As a chain of FastAPI dependencies (one of them a ``yield`` dependency
to end the session) that cost more per request than an append on PostgreSQL: FastAPI runs a
``yield`` dependency's exit through an exit stack inside a cancellation shield. So one plain
``async`` dependency makes the session and records it in the request's ASGI scope, and
:class:`SessionMiddleware` ends it once the app has answered.

The services the routes call run in commit mode, so each call commits or rolls back what it
began before it returns; on the hot path (API-key lookup, append, history reads) the session
is never used at all. A session still in a transaction here means a call was cut short (a
cancelled request, a bug): it is rolled back and its connection goes back to the pool.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from convodb import Database

__all__ = ["SessionMiddleware", "end_session", "request_session"]

_SCOPE_KEY = "convodb.session"


def request_session(request: Request, database: Database) -> AsyncSession:
    """The request's session on ``database``, made on first use; the middleware ends it."""
    session: AsyncSession | None = request.scope.get(_SCOPE_KEY)
    if session is None:
        if _SCOPE_KEY not in request.scope:  # pragma: no cover - create_app installs it
            raise RuntimeError("request_session needs SessionMiddleware")
        session = request.scope[_SCOPE_KEY] = database.sessionmaker()
    return session


class SessionMiddleware:
    """Ends the session :func:`request_session` made for a request, whatever the outcome."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[_SCOPE_KEY] = None
        try:
            await self.app(scope, receive, send)
        finally:
            session: AsyncSession | None = scope[_SCOPE_KEY]
            if session is not None:
                await end_session(session)


async def end_session(session: AsyncSession) -> None:
    """Roll back and release a session left in a transaction; otherwise there is nothing to
    end (it holds no connection), and skipping the close saves its greenlet round trips."""
    if session.in_transaction():
        await session.close()
