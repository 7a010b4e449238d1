"""Fresh benchmark databases, deterministic message text, and bulk loads on the bare driver.

Every benchmark database is new: ``convodb_bench_<hex>`` on PostgreSQL and MariaDB (utf8mb4
with the binary, no-pad collation convodb's tables use), a file in a new temp directory on
SQLite; all are dropped when the run ends, also when it fails. Read workloads need hundreds of
thousands of rows; they are loaded with COPY (asyncpg), multi-row INSERTs of ~1 MB in big
transactions (asyncmy's ``executemany``) or one ``executemany`` per transaction (sqlite3),
never through the API under test, so loading stays a few seconds.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

POSTGRES_URL = os.environ.get(
    "CONVODB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get("CONVODB_BENCH_MARIADB_URL", "mysql://root@127.0.0.1:3306/test")
USER = "bench-user"
LOAD_CHUNK = 50_000

_WORDS = (
    "the agent called a tool and the model answered with a summary of the weather in paris "
    "tomorrow rain is likely so take an umbrella and check the forecast again tonight please"
).split()


def asyncpg() -> Any:
    """asyncpg ships no type information; the benchmark uses it untyped."""
    return importlib.import_module("asyncpg")


def aiosqlite() -> Any:
    return importlib.import_module("aiosqlite")


def asyncmy() -> Any:
    return importlib.import_module("asyncmy")


def mariadb_connect_args(database: str | None) -> dict[str, Any]:
    """asyncmy's ``connect``/``create_pool`` arguments for ``MARIADB_URL``'s server."""
    url = urlsplit(MARIADB_URL)
    args: dict[str, Any] = {
        "host": url.hostname or "127.0.0.1",
        "port": url.port or 3306,
        "user": unquote(url.username or "root"),
        "password": unquote(url.password or ""),
        "charset": "utf8mb4",
    }
    if database is not None:
        args["database"] = database
    return args


def content_for(n: int) -> str:
    """A deterministic message of 20-60 words (~120-350 characters), different for each n."""
    length = 20 + (n * 7919) % 41
    start = (n * 31) % len(_WORDS)
    words = [_WORDS[(start + i) % len(_WORDS)] for i in range(length)]
    return f"#{n} " + " ".join(words)


def tokens_for(text: str) -> int:
    """The stored token estimate for bulk-loaded rows (~4 characters a token)."""
    return max(1, len(text) // 4)


def role_for(seq: int) -> str:
    return "user" if seq % 2 else "assistant"


@dataclass(frozen=True)
class Target:
    """One fresh database: its dialect and URLs for each client."""

    dialect: str  # "sqlite" | "postgresql" | "mariadb"
    path: str  # SQLite file path, or the PostgreSQL / MariaDB database name

    @property
    def convodb_url(self) -> str:
        if self.dialect == "sqlite":
            return f"sqlite:///{self.path}"
        if self.dialect == "mariadb":
            return _mariadb_url(self.path, "mariadb")
        return _pg_url(self.path)

    @property
    def sqlalchemy_url(self) -> str:
        if self.dialect == "sqlite":
            return f"sqlite+aiosqlite:///{self.path}"
        if self.dialect == "mariadb":
            return _mariadb_url(self.path, "mysql+asyncmy") + "?charset=utf8mb4"
        return _pg_url(self.path).replace("postgresql://", "postgresql+asyncpg://", 1)

    @property
    def dsn(self) -> str:
        if self.dialect == "sqlite":
            return self.path
        if self.dialect == "mariadb":
            return _mariadb_url(self.path, "mysql")
        return _pg_url(self.path)


def _pg_url(database: str) -> str:
    base, _, _ = POSTGRES_URL.rpartition("/")
    return f"{base}/{database}"


def _mariadb_url(database: str, scheme: str) -> str:
    """``MARIADB_URL`` with another scheme and database (``mysql://root@host:3306/test`` ->
    ``mariadb://root@host:3306/<database>``)."""
    url = urlsplit(MARIADB_URL)
    return f"{scheme}://{url.netloc}/{database}"


@contextlib.asynccontextmanager
async def fresh_database(dialect: str) -> AsyncIterator[Target]:
    """A new, empty database, dropped (or deleted) on exit."""
    if dialect == "sqlite":
        directory = tempfile.mkdtemp(prefix="convodb_bench_")
        try:
            yield Target("sqlite", os.path.join(directory, "bench.db"))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    name = f"convodb_bench_{uuid.uuid4().hex[:12]}"
    if dialect == "mariadb":
        await _mariadb_admin(
            f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin"
        )
        try:
            yield Target("mariadb", name)
        finally:
            await _mariadb_admin(f"DROP DATABASE IF EXISTS `{name}`")
        return
    admin = await asyncpg().connect(POSTGRES_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield Target("postgresql", name)
    finally:
        admin = await asyncpg().connect(POSTGRES_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def postgres_available() -> str | None:
    """``None`` when the PostgreSQL server answers, else why not."""
    try:
        conn = await asyncpg().connect(POSTGRES_URL, timeout=5)
    except Exception as exc:  # any failure means: skip PostgreSQL, say why
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


async def _mariadb_admin(sql: str) -> None:
    conn = await asyncmy().connect(**mariadb_connect_args(None), autocommit=True)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(sql)
    finally:
        await conn.ensure_closed()


async def mariadb_available() -> str | None:
    """``None`` when the MariaDB server answers, else why not."""
    try:
        conn = await asyncmy().connect(**mariadb_connect_args(None), connect_timeout=5)
    except Exception as exc:  # any failure means: skip MariaDB, say why
        return f"{type(exc).__name__}: {exc}"
    await conn.ensure_closed()
    return None


# -- bulk loads -----------------------------------------------------------------------------

Row = tuple[Any, ...]


async def bulk_insert(
    target: Target, table: str, columns: Sequence[str], rows: Iterable[Row]
) -> None:
    """Insert rows fast: binary COPY on PostgreSQL, multi-row INSERTs in big transactions on
    MariaDB, executemany in big transactions on SQLite."""
    if target.dialect == "mariadb":
        await _mariadb_bulk_insert(target, table, columns, rows)
        return
    if target.dialect == "postgresql":
        conn = await asyncpg().connect(target.dsn)
        try:
            for chunk in _chunks(rows, LOAD_CHUNK):
                await conn.copy_records_to_table(table, records=chunk, columns=list(columns))
            await conn.execute(f"ANALYZE {table}")
        finally:
            await conn.close()
        return
    # A plain sqlite3 connection in the loader: bulk loading is set-up, not the code measured.
    conn = sqlite3.connect(target.path, timeout=60)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        for chunk in _chunks(rows, LOAD_CHUNK * 4):
            with conn:
                conn.executemany(sql, chunk)
        conn.execute(f"ANALYZE {table}")
        conn.commit()
    finally:
        conn.close()


async def _mariadb_bulk_insert(
    target: Target, table: str, columns: Sequence[str], rows: Iterable[Row]
) -> None:
    # asyncmy's executemany on ``INSERT ... VALUES (%s, ...)`` sends multi-row INSERTs of up
    # to ~1 MB each (its text path; no statement cache, so no per-row binary bulk protocol);
    # a commit per LOAD_CHUNK rows keeps the transactions big and the undo log bounded. Set-up,
    # not the code measured: unique and foreign-key checks are off for the loading session.
    conn = await asyncmy().connect(**mariadb_connect_args(target.path), autocommit=False)
    try:
        quoted = ", ".join(f"`{c}`" for c in columns)
        sql = f"INSERT INTO `{table}` ({quoted}) VALUES ({', '.join(['%s'] * len(columns))})"
        async with conn.cursor() as cursor:
            await cursor.execute("SET SESSION unique_checks = 0, foreign_key_checks = 0")
            for chunk in _chunks(rows, LOAD_CHUNK):
                await cursor.executemany(sql, chunk)
                await conn.commit()
            await cursor.execute(f"ANALYZE TABLE `{table}`")
            await cursor.fetchall()
        await conn.commit()
    finally:
        await conn.ensure_closed()


def _chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def timestamp(target: Target, n: int) -> Any:
    """A created_at value as each driver stores convodb's ``DateTimeUTC``."""
    at = EPOCH + timedelta(microseconds=n * 1000)
    if target.dialect == "postgresql":
        return at
    if target.dialect == "mariadb":
        return at.replace(tzinfo=None)  # DATETIME(6): naive UTC
    return at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


async def load_core(
    target: Target, conversations: Sequence[tuple[str, int]], *, first_message: int = 0
) -> None:
    """Fill convodb's schema (shared by ``raw`` and ``convodb``) with whole conversations.

    Args:
        conversations: ``(conversation id, message count)`` for each new conversation.
        first_message: offset for message text, so separate loads get distinct text.
    """
    empty_json = "{}"  # asyncpg takes jsonb as text; SQLite and MariaDB store JSON as text
    now = timestamp(target, 0)
    await bulk_insert(
        target,
        "conversations",
        ("id", "user_id", "title", "metadata", "last_seq", "created_at", "updated_at"),
        ((cid, USER, None, empty_json, count, now, now) for cid, count in conversations),
    )

    def messages() -> Iterator[Row]:
        n = first_message
        for cid, count in conversations:
            for seq in range(1, count + 1):
                n += 1
                text = content_for(n)
                yield (
                    cid,
                    seq,
                    f"{n:032x}"[:32] + "0000",
                    role_for(seq),
                    text,
                    empty_json,
                    tokens_for(text),
                    timestamp(target, n),
                )

    columns = (
        "conversation_id",
        "seq",
        "id",
        "role",
        "content",
        "metadata",
        "token_count",
        "created_at",
    )
    await bulk_insert(target, "messages", columns, messages())
