"""The request body size limit, enforced before the body is parsed."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._problems import BODY_TOO_LARGE, Problem, problem_response

__all__ = ["BodyLimitMiddleware"]


class BodyLimitMiddleware:
    """Answers 413 when a request body is larger than ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused before anything is read; a body
    without one (chunked) is counted as it arrives and refused when it crosses the limit, so
    the server never buffers more than ``max_bytes`` of it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes; send fewer messages"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    response = problem_response(
                        BODY_TOO_LARGE,
                        self._too_large(),
                        instance=scope["path"],
                        limit=self.max_bytes,
                    )
                    await response(scope, receive, send)
                    return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised while FastAPI reads the body; it re-raises HTTPExceptions as they
                    # are, and the app's handler renders the problem.
                    raise Problem(BODY_TOO_LARGE, self._too_large(), limit=self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)
