"""The database's faults over HTTP: a 503 that says what to do and nothing about the database.

A ``StoreUnavailableError`` or ``StoreBusyError`` carries the driver's text (host, port, file,
driver error names). Clients get the problem type's fixed detail and ``Retry-After``; the
server's log gets the exception with its cause, once per request.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest

from convodb import Database, StoreBusyError, StoreUnavailableError
from convodb.server import create_app
from tests._http import JWT_SECRET, make_client, settings
from tests.conftest import BACKENDS

UNAVAILABLE = {
    "type": "urn:convodb:problem:store-unavailable",
    "title": "Database unavailable",
    "status": 503,
    "detail": "The database is unavailable; nothing was stored. Retry later.",
}
BUSY = {
    "type": "urn:convodb:problem:store-busy",
    "title": "Database busy; retry",
    "status": 503,
    "detail": "The database is busy with other writes; nothing was stored. Retry in a moment.",
}


def bearer(user: str) -> dict[str, str]:
    token = jwt.encode({"sub": user, "exp": 2**40}, JWT_SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(params=BACKENDS)
async def unreachable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A database that cannot be opened: a file in a missing folder, a closed port."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'missing-folder' / 'secret-name.db'}"
    elif request.param == "postgresql":
        url = "postgresql://postgres@127.0.0.1:1/secret_name"
    else:
        url = "mariadb://root@127.0.0.1:1/secret_name"
    database = Database(url)
    try:
        yield database
    finally:
        await database.dispose()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "convodb.server"]


async def test_unavailable_database_is_a_503_that_names_no_host_driver_or_file(
    unreachable: Database, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings(), database=unreachable)
    api_key = {"Authorization": "Bearer cdb_0193a8c27d4e7b1a9c3f2e5d8a1b4c6f_secret"}
    requests: list[tuple[str, str, dict[str, str]]] = [
        ("GET", "/readyz", {}),  # unauthenticated
        ("POST", "/v1/conversations", api_key),  # the API-key lookup fails
        ("POST", "/v1/conversations", bearer("alice")),  # the service's write fails
        ("GET", "/v1/conversations", bearer("alice")),  # the service's read fails
    ]
    async with make_client(app) as client:
        for method, path, headers in requests:
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="convodb.server"):
                response = await client.request(method, path, headers=headers)
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json() == {**UNAVAILABLE, "instance": path}
            assert int(response.headers["retry-after"]) > 0
            # The log has the specifics: the error, its driver cause, the request; once.
            [record] = _warnings(caplog)
            assert record.levelno == logging.WARNING
            assert record.exc_info is not None
            error = record.exc_info[1]
            assert isinstance(error, StoreUnavailableError)
            assert error.__cause__ is not None
            assert f"{method} {path}" in record.getMessage()
            assert type(error.__cause__).__name__ in caplog.text


async def test_busy_database_is_a_503_with_retry_after_and_no_driver_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite only: another process holds the write lock longer than the busy timeout."""
    path = tmp_path / "busy.db"
    db = Database(f"sqlite:///{path}?timeout=0.1")
    await db.create_all()
    app = create_app(settings(), database=db)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        async with make_client(app) as client:
            created = await client.post("/v1/conversations", headers=bearer("alice"))
            url = f"/v1/conversations/{created.json()['id']}/messages"
            holder.execute("BEGIN IMMEDIATE")  # the write lock, held by another connection
            with caplog.at_level(logging.WARNING, logger="convodb.server"):
                response = await client.post(
                    url,
                    json={"messages": [{"role": "user", "content": "hi"}]},
                    headers=bearer("alice"),
                )
            holder.execute("ROLLBACK")
            assert response.status_code == 503, response.text
            assert response.json() == {**BUSY, "instance": url}
            assert response.headers["retry-after"] == "1"
            [record] = _warnings(caplog)
            assert record.exc_info is not None
            assert isinstance(record.exc_info[1], StoreBusyError)
            assert (await client.get(url, headers=bearer("alice"))).json()["items"] == []
    finally:
        holder.close()
        await db.dispose()


async def test_problems_of_the_request_itself_have_no_retry_after(
    unreachable: Database,
) -> None:
    async with make_client(create_app(settings(), database=unreachable)) as client:
        response: httpx.Response = await client.get("/v1/conversations")
    assert response.status_code == 401
    assert "retry-after" not in response.headers
