"""The request body's limits, enforced while it is read and before it is parsed.

- **Size**: a declared ``Content-Length`` over the limit is refused before anything is read; a
  body without one (chunked) is counted as it arrives and refused when it crosses the limit, so
  the server never buffers more than the limit (413).
- **Media type**: every body the API reads is JSON; a body sent without ``Content-Type:
  application/json`` (or a ``+json`` type) is refused (415) instead of reaching the schema as a
  byte string, which FastAPI reports as "Input should be a valid dictionary".
- **Time**: the whole body must arrive within the deadline, counted from the app's first read
  of it, or the answer is 408 and the connection is closed. Without it, a client that trickles
  a byte at a time holds a connection and a request forever.

These are checked in the ``receive`` the app reads the body through, so they cost nothing on
requests whose body is never read (a GET, an unknown route), and they are raised as
:class:`~._problems.Problem`: FastAPI re-raises an ``HTTPException`` met while reading the body
as it is, and the app's one handler renders it.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._problems import (
    BODY_TOO_LARGE,
    REQUEST_TIMEOUT,
    UNSUPPORTED_MEDIA_TYPE,
    Problem,
    problem_response,
)

__all__ = ["BodyLimitMiddleware"]


def _is_json(content_type: bytes) -> bool:
    """Whether a ``Content-Type`` value is JSON: ``application/json`` or ``application/*+json``,
    parameters (``; charset=utf-8``) allowed. The same rule FastAPI parses bodies by."""
    media_type = content_type.partition(b";")[0].strip().lower()
    main, _, sub = media_type.partition(b"/")
    return main == b"application" and (sub == b"json" or sub.endswith(b"+json"))


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``, 415 for one that is not JSON, 408 for one that takes
    longer than ``timeout`` seconds to arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    def _too_large(self) -> Problem:
        detail = f"the request body is larger than {self.max_bytes} bytes; send fewer messages"
        return Problem(BODY_TOO_LARGE, detail, limit=self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_json = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    problem = self._too_large()
                    response = problem_response(
                        problem.kind, problem.detail, instance=scope["path"], **problem.extensions
                    )
                    await response(scope, receive, send)
                    return
            elif name == b"content-type":
                is_json = _is_json(value)
        received = 0
        deadline: float | None = None
        complete = False

        async def guarded_receive() -> Message:
            nonlocal received, deadline, complete
            if complete:  # the body is in; later reads wait for a disconnect: no deadline
                return await receive()
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self.timeout
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise Problem(
                    REQUEST_TIMEOUT,
                    f"the request body did not arrive within {self.timeout:g} seconds",
                    # The rest of the body may still come: the connection cannot be reused.
                    headers={"Connection": "close"},
                ) from None
            if message["type"] != "http.request":
                complete = True
                return message
            body = message.get("body", b"")
            if body and not is_json:
                raise Problem(
                    UNSUPPORTED_MEDIA_TYPE,
                    "the body must be JSON: send it with 'Content-Type: application/json'",
                )
            received += len(body)
            if received > self.max_bytes:
                raise self._too_large()
            complete = not message.get("more_body", False)
            return message

        await self.app(scope, guarded_receive, send)
