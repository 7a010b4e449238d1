"""Helpers for the HTTP service's tests: an app on the test database, keys, and a client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI

from convodb import ApiKeyService, Database
from convodb.server import Settings

JWT_SECRET = "a-test-secret-that-is-at-least-32-bytes-long"


@dataclass
class Api:
    """The app under test, on ``db``, with an in-process client (no credentials)."""

    db: Database
    app: FastAPI
    client: httpx.AsyncClient
    tokens: dict[str, str] = field(default_factory=dict)

    async def key(self, user: str | None, name: str | None = None) -> str:
        """A fresh API key bound to ``user`` (a service key when ``None``)."""
        async with self.db.session() as session:
            created = await ApiKeyService(session).create(user, name=name)
        return created.token

    async def auth(self, user: str) -> dict[str, str]:
        """Headers that authenticate as ``user`` with a bound API key."""
        if user not in self.tokens:
            self.tokens[user] = await self.key(user)
        return {"Authorization": f"Bearer {self.tokens[user]}"}


def make_client(app: FastAPI, client: tuple[str, int] = ("127.0.0.1", 50000)) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=client)
    return httpx.AsyncClient(transport=transport, base_url="http://convodb.test")


def settings(**changes: Any) -> Settings:
    return Settings(**{"jwt_secret": JWT_SECRET, **changes})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``convodb ARGS`` as a real process; raises if it runs longer than ``timeout``."""
    return subprocess.run(
        [sys.executable, "-m", "convodb.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


@dataclass
class Server:
    """A ``convodb serve`` process and where it listens."""

    process: subprocess.Popen[str]
    base_url: str

    def stop(self) -> str:
        """Stop the server; returns what it wrote to stderr."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        _, err = self.process.communicate(timeout=15)
        return err


def start_server(*args: str, env: Mapping[str, str] | None = None) -> Server:
    """``convodb serve ARGS`` as a real process on a free loopback port, once it answers.

    Polls ``/healthz`` for at most 30 s; stops the process and raises if it never answers.
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "convodb.cli", "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    server = Server(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.05)  # a bounded poll: the loop ends at the deadline
    raise RuntimeError(f"convodb serve did not become ready:\n{server.stop()}")
