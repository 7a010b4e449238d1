"""The request's session: made by the one ``/v1`` dependency, ended after the request."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.types import Message

from convodb import Database
from convodb.server._session import SessionMiddleware, request_session
from tests._http import Api


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    pass


def _scope() -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}


async def test_a_session_cut_short_in_a_transaction_is_rolled_back_and_released(
    db: Database,
) -> None:
    made: list[AsyncSession] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        session = request_session(Request(scope), db)
        assert request_session(Request(scope), db) is session  # one per request
        made.append(session)
        await session.execute(text("SELECT 1"))
        raise RuntimeError("cut short")

    with pytest.raises(RuntimeError, match="cut short"):
        await SessionMiddleware(app)(_scope(), _receive, _send)
    assert not made[0].in_transaction()
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_requests_leave_no_connection_checked_out(api: Api) -> None:
    headers = await api.auth("alice")
    created = await api.client.post("/v1/conversations", headers=headers)
    cid = created.json()["id"]
    await api.client.post(
        f"/v1/conversations/{cid}/messages",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
    )
    assert (await api.client.get(f"/v1/conversations/{cid}", headers=headers)).status_code == 200
    assert (await api.client.get("/v1/conversations/nope", headers=headers)).status_code == 404
    assert api.db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
