"""The HTTP yardstick: the least a FastAPI endpoint on the bare driver must do for two routes.

``python -m benchmarks.http_yardstick --dialect sqlite|postgresql --dsn DSN --port PORT`` serves
it under uvicorn (one worker, 127.0.0.1 only), on convodb's own schema, with the raw store's
statements (``stores.py``):

- ``POST /v1/conversations/{id}/messages``: a pydantic body (role and content), then one
  append that assigns ``seq`` in the transaction (PostgreSQL: one CTE statement, autocommit;
  SQLite: ``UPDATE ... RETURNING last_seq``, INSERT, COMMIT); 201 with the stored messages in
  convodb's response shape.
- ``POST /v1/conversations/{id}/agent-input``: latest-N (``max_messages``) with the ownership
  check in the same statement, rows decoded, returned as OpenAI chat dicts.
- ``GET /healthz``: no database; the floor of uvicorn + FastAPI + the client.

Authentication is a constant-time compare of the bearer token with the one in
``CONVODB_BENCH_YARDSTICK_TOKEN`` (an environment variable, not a flag: the process list shows
flags). The user is the benchmark's fixed user. No tool calls, metadata or keys in requests:
the benchmark sends none.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Path
from pydantic import BaseModel, Field

from ._data import USER, aiosqlite, asyncpg
from .stores import (
    _PG_APPEND,
    _PG_LATEST,
    _SQ_BUMP,
    _SQ_INSERT,
    _SQ_LATEST,
    _decode_sqlite_row,
    _sqlite_now,
    tokens_estimate,
)

TOKEN_ENV = "CONVODB_BENCH_YARDSTICK_TOKEN"
POOL_MAX = 15
"""SQLAlchemy's default pool (5 + 10 overflow), which ``convodb serve`` uses: the same cap."""


class Missing(LookupError):
    """No such conversation for this user."""


class Backend:
    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def append(
        self, cid: str, msgs: Sequence[tuple[str, str | None, int]], ids: list[str], now: datetime
    ) -> list[int]:
        raise NotImplementedError

    async def latest(self, cid: str, n: int) -> list[tuple[Any, ...]]:
        """Newest first: (seq, id, role, content, tool_calls, tool_name, tool_call_id,
        metadata, key, token_count, created_at), JSON decoded."""
        raise NotImplementedError


class PostgresBackend(Backend):
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def open(self) -> None:
        async def init(conn: Any) -> None:
            for kind in ("json", "jsonb"):
                await conn.set_type_codec(
                    kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
                )

        async def no_reset(conn: Any) -> None:
            pass  # no session state on a connection: skip the reset round trip (stores.py)

        self.pool = await asyncpg().create_pool(
            self.dsn, min_size=1, max_size=POOL_MAX, init=init, reset=no_reset
        )

    async def close(self) -> None:
        await self.pool.close()

    async def append(
        self, cid: str, msgs: Sequence[tuple[str, str | None, int]], ids: list[str], now: datetime
    ) -> list[int]:
        rows = await self.pool.fetch(
            _PG_APPEND,
            cid,
            USER,
            len(msgs),
            now,
            ids,
            [m[0] for m in msgs],
            [m[1] for m in msgs],
            [m[2] for m in msgs],
        )
        if not rows:
            raise Missing(cid)
        return [r[0] for r in rows]

    async def latest(self, cid: str, n: int) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self.pool.fetch(_PG_LATEST, cid, USER, n)]


class SqliteBackend(Backend):
    """aiosqlite connections in a small pool, with convodb's pragmas (as ``RawSqlite``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def open(self) -> None:
        self._idle: asyncio.Queue[Any] = asyncio.Queue()
        self._all: list[Any] = []

    async def close(self) -> None:
        for conn in self._all:
            await conn.close()

    async def _acquire(self) -> Any:
        if self._idle.empty() and len(self._all) < POOL_MAX:
            conn = await aiosqlite().connect(self.path, timeout=30)
            self._all.append(conn)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
                await conn.execute(f"PRAGMA {pragma}")
            return conn
        return await self._idle.get()

    async def append(
        self, cid: str, msgs: Sequence[tuple[str, str | None, int]], ids: list[str], now: datetime
    ) -> list[int]:
        at = _sqlite_now()
        conn = await self._acquire()
        try:
            bumped = await conn.execute_fetchall(_SQ_BUMP, (len(msgs), at, cid, USER))
            if not bumped:
                await conn.rollback()
                raise Missing(cid)
            first = bumped[0][0] - len(msgs) + 1
            rows = [
                (cid, first + i, ids[i], role, content, tokens, at)
                for i, (role, content, tokens) in enumerate(msgs)
            ]
            if len(rows) == 1:
                await conn.execute(_SQ_INSERT, rows[0])
            else:
                await conn.executemany(_SQ_INSERT, rows)
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise
        finally:
            self._idle.put_nowait(conn)
        return [first + i for i in range(len(msgs))]

    async def latest(self, cid: str, n: int) -> list[tuple[Any, ...]]:
        conn = await self._acquire()
        try:
            rows = await conn.execute_fetchall(_SQ_LATEST, (cid, USER, n))
        finally:
            self._idle.put_nowait(conn)
        return [_decode_sqlite_row(r, cid) for r in rows]


def openai_chat(row: tuple[Any, ...]) -> dict[str, Any]:
    """One stored message as an OpenAI chat message."""
    _seq, _id, role, content, calls, _name, call_id, *_ = row
    out: dict[str, Any] = {"role": role, "content": content}
    if calls:
        out["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in calls
        ]
    if role == "tool":
        out["tool_call_id"] = call_id
    return out


class MessageIn(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None


class AppendIn(BaseModel):
    messages: list[MessageIn] = Field(min_length=1, max_length=1000)


class AgentInputIn(BaseModel):
    format: Literal["openai-chat"] = "openai-chat"
    max_messages: int = Field(default=50, ge=1, le=1000)


ConversationId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]


def create_app(backend: Backend, token: str) -> FastAPI:
    expected = f"Bearer {token}".encode()

    async def user(authorization: Annotated[str, Header()] = "") -> str:
        # async: a plain ``def`` dependency would cost a thread-pool hop per request
        if not hmac.compare_digest(authorization.encode(), expected):
            raise HTTPException(401, "bad credentials")
        return USER

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await backend.open()
        try:
            yield
        finally:
            await backend.close()

    app = FastAPI(lifespan=lifespan)

    auth = [Depends(user)]

    @app.post("/v1/conversations/{conversation_id}/messages", status_code=201, dependencies=auth)
    async def append(conversation_id: ConversationId, body: AppendIn) -> dict[str, Any]:
        msgs = [(m.role, m.content, tokens_estimate(m.content)) for m in body.messages]
        ids = [str(uuid.uuid4()) for _ in msgs]
        now = datetime.now(UTC)
        try:
            seqs = await backend.append(conversation_id, msgs, ids, now)
        except Missing:
            raise HTTPException(404, "conversation not found") from None
        return {
            "messages": [
                {
                    "id": ids[i],
                    "conversation_id": conversation_id,
                    "seq": seqs[i],
                    "role": role,
                    "content": content,
                    "tool_calls": None,
                    "tool_name": None,
                    "tool_call_id": None,
                    "metadata": {},
                    "key": None,
                    "token_count": tokens,
                    "created_at": now,
                }
                for i, (role, content, tokens) in enumerate(msgs)
            ]
        }

    @app.post("/v1/conversations/{conversation_id}/agent-input", dependencies=auth)
    async def agent_input(conversation_id: ConversationId, body: AgentInputIn) -> dict[str, Any]:
        rows = await backend.latest(conversation_id, body.max_messages)
        if not rows:
            raise HTTPException(404, "conversation not found")  # or empty: fine for the bench
        rows.reverse()
        while rows and rows[0][2] == "tool":  # a window never starts with a tool result
            rows.pop(0)
        return {
            "format": body.format,
            "request": {"messages": [openai_chat(r) for r in rows]},
            "token_count": sum(r[9] or 0 for r in rows),
            "dropped": 0,
            "first_seq": rows[0][0] if rows else None,
        }

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        await backend.latest("readyz", 1)
        return {"status": "ready"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_yardstick")
    parser.add_argument("--dialect", choices=("sqlite", "postgresql"), required=True)
    parser.add_argument("--dsn", required=True, help="SQLite path or PostgreSQL URL")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise SystemExit(f"{TOKEN_ENV} is not set")
    backend: Backend = (
        SqliteBackend(args.dsn) if args.dialect == "sqlite" else PostgresBackend(args.dsn)
    )
    import uvicorn

    # As ``convodb serve``: uvicorn.run with host, port and log level, one worker.
    uvicorn.run(
        create_app(backend, token), host="127.0.0.1", port=args.port, log_level=args.log_level
    )


if __name__ == "__main__":
    main()
