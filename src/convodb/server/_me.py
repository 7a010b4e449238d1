"""The caller's own account: ``DELETE /v1/me`` erases everything of the caller."""

from fastapi import FastAPI, Response

from convodb import AdminService

from ._routing import Authenticated, json_response, ok, v1
from ._schemas import ErasureOut

__all__ = ["add_me_routes"]


def add_me_routes(app: FastAPI) -> None:
    @app.delete(
        "/v1/me",
        tags=["account"],
        summary="Erase everything of the caller",
        responses=ok(ErasureOut) | v1(),
    )
    async def erase_me(caller: Authenticated) -> Response:
        """Delete the caller's conversations, messages, summaries, attachments, idempotency
        keys and API keys (the right to erasure, GDPR Art. 17), and say how many of each.
        A key bound to the caller stops working with it; a service key, which is no user's,
        is kept. Nothing else of the caller remains to erase: calling it again answers zeros.
        """
        service = caller.service
        admin = AdminService(service.session, limits=service.limits, api_key_id=service.api_key_id)
        erased = await admin.erase_user(caller.user)
        return json_response(erased.to_dict())
