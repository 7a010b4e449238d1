"""The request body's media type and deadline, and idle connections: in-process and over TCP."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.types import Message

from convodb import Database
from convodb.server import Settings, create_app
from tests._http import Api, Server, make_client, settings, start_server

MESSAGES = b'{"messages": [{"role": "user", "content": "hi"}]}'


def assert_problem(status: int, headers: dict[str, str], body: Any, name: str) -> None:
    assert status == int(body["status"]), body
    assert headers["content-type"] == "application/problem+json"
    assert body["type"] == f"urn:convodb:problem:{name}"


async def test_a_body_without_a_json_content_type_is_415(api: Api) -> None:
    alice = await api.auth("alice")
    created = await api.client.post("/v1/conversations", headers=alice)
    url = f"/v1/conversations/{created.json()['id']}/messages"
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = alice if content_type is None else {**alice, "content-type": content_type}
        response = await api.client.post(url, content=MESSAGES, headers=headers)
        assert response.status_code == 415, response.text
        body = response.json()
        assert_problem(415, dict(response.headers), body, "unsupported-media-type")
        assert "Content-Type: application/json" in body["detail"]
    assert (await api.client.get(url, headers=alice)).json()["items"] == []
    for content_type in ("application/json; charset=utf-8", "Application/JSON"):
        response = await api.client.post(
            url, content=MESSAGES, headers={**alice, "content-type": content_type}
        )
        assert response.status_code == 201, response.text
    # A body the route does not need is no body: no Content-Type is needed either.
    empty = await api.client.post("/v1/conversations", headers=alice)
    assert empty.status_code == 201 and "content-type" not in empty.request.headers


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("convodb.test", 80),
    }


async def test_a_body_that_stalls_is_408_after_the_deadline_and_the_connection_closes(
    db: Database,
) -> None:
    app = create_app(settings(body_timeout=0.3), database=db)
    first: list[Message] = [{"type": "http.request", "body": b'{"messages": [', "more_body": True}]

    async def stalling_receive() -> Message:
        if first:
            return first.pop()
        await asyncio.Event().wait()  # the rest never comes
        raise AssertionError("unreachable")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"content-length", b"1000")]
    started = time.monotonic()
    async with asyncio.timeout(10):
        await app(_scope("/v1/conversations", headers), stalling_receive, send)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 3
    start, body = sent[0], sent[1]
    assert start["status"] == 408
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert response_headers["connection"] == "close"
    assert b'"urn:convodb:problem:request-timeout"' in body["body"]
    assert b"0.3 seconds" in body["body"]


async def test_a_body_that_arrives_in_time_is_read_whole(db: Database) -> None:
    app = create_app(settings(body_timeout=0.5), database=db)
    async with make_client(app) as client:

        async def slow_chunks() -> Any:
            for chunk in (b'{"title": ', b'"slow but in time"}'):
                await asyncio.sleep(0.1)
                yield chunk

        token = (await Api(db, app, client).auth("alice"))["Authorization"]
        response = await client.post(
            "/v1/conversations",
            content=slow_chunks(),
            headers={"Authorization": token, "content-type": "application/json"},
        )
    assert response.status_code == 201, response.text
    assert response.json()["title"] == "slow but in time"


def test_timeouts_are_settings_with_environment_variables() -> None:
    loaded = Settings.from_env(
        {"CONVODB_BODY_TIMEOUT": "2.5", "CONVODB_KEEP_ALIVE_TIMEOUT": "7", "CONVODB_DEV": "1"}
    )
    assert (loaded.body_timeout, loaded.keep_alive_timeout) == (2.5, 7)
    defaults = Settings(dev=True)
    assert (defaults.body_timeout, defaults.keep_alive_timeout) == (30.0, 5)
    for bad in ({"body_timeout": 0}, {"body_timeout": float("inf")}, {"keep_alive_timeout": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Settings(dev=True, **bad)


# -- over TCP, against convodb serve -------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``convodb serve`` with a 0.5 s body deadline and a 1 s keep-alive timeout."""
    env = {
        "CONVODB_DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('body') / 'convodb.db'}",
        "CONVODB_BODY_TIMEOUT": "0.5",
        "CONVODB_KEEP_ALIVE_TIMEOUT": "1",
    }
    server = start_server("--log-level", "warning", env=env)
    try:
        yield server
    finally:
        server.stop()


def _connect(server: Server) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=10)
    connection.settimeout(4)  # every recv below must end well before this
    return connection


def _read_until_closed(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_a_trickled_body_gets_408_and_the_connection_is_closed(server: Server) -> None:
    with _connect(server) as connection:
        connection.sendall(
            b"POST /v1/conversations HTTP/1.1\r\nHost: convodb.test\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        for _ in range(2):  # a byte now and then, never the whole body
            time.sleep(0.2)
            connection.sendall(b" ")
        response = _read_until_closed(connection)
        elapsed = time.monotonic() - started
    assert response.startswith(b"HTTP/1.1 408 "), response
    assert b"urn:convodb:problem:request-timeout" in response
    assert 0.4 <= elapsed < 3


def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(server: Server) -> None:
    with _connect(server) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: convodb.test\r\n\r\n")
        answered = b""
        while not answered.endswith(b'{"status":"ok"}'):  # the whole response, and no more
            chunk = connection.recv(65536)
            assert chunk, answered
            answered += chunk
        started = time.monotonic()
        assert answered.startswith(b"HTTP/1.1 200 "), answered
        rest = _read_until_closed(connection)  # the server closes the idle connection
        elapsed = time.monotonic() - started
    assert rest == b""
    assert 0.5 <= elapsed < 3
