"""Connections of the service's own, on the bare driver, for the hot path.

When the service owns a transaction (commit mode, the session not in one), its append and
history reads need no SQLAlchemy session or pooled SQLAlchemy connection: a checkout from the
engine's pool costs greenlet switches, pool events and, on SQLite, aiosqlite thread hops per
statement -- more than the statements themselves. A ``Database`` therefore keeps a small set of
driver connections beside its engine, used by ``convodb._dialect.Backend`` for owned work only:

- SQLite (:class:`SqliteThreads`): one writer thread and a few reader threads, each with its
  own ``sqlite3`` connection in autocommit mode. A whole operation (``BEGIN IMMEDIATE``, the
  seq bump, the insert, ``COMMIT``; or a read and its decoding) runs in the thread in one
  hop. In-process writers queue on the one writer thread instead of polling SQLite's lock
  with the busy handler's sleeps; writers in other processes still wait on the lock up to the
  busy timeout. A cancelled caller cannot leave a transaction open: the thread always ends
  what it began.
- PostgreSQL (:class:`PgConnections`): an asyncpg pool with SQLAlchemy's JSON codecs and no
  reset query on release (nothing the hot path runs leaves session state behind), bound to
  the event loop that first uses it; another loop gets a pool of its own.

Both open connections lazily and close them in :meth:`close` (``Database.dispose``), after
which they open again on demand, as an engine's pool does.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["PgConnections", "SqliteThreads", "driver_connections"]

T = TypeVar("T")

SQLITE_READERS = 4
"""Reader threads: SQLite releases the GIL while it reads, so a few overlap usefully."""


class SqliteThreads:
    """Thread-confined ``sqlite3`` connections: one writer, a few readers."""

    def __init__(self, args: list[Any], kwargs: dict[str, Any], *, readers: int) -> None:
        self._args, self._kwargs, self._readers_count = args, kwargs, readers
        self._local = threading.local()
        self._guard = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self.on_connect: list[Callable[[sqlite3.Connection], None]] = []
        """Called with each new connection, in its thread (tests trace statements so)."""

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on the writer connection; it must end any transaction it begins."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="convodb-sqlite-writer")
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._run, work)

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on a reader connection (autocommit: each SELECT sees the latest commit)."""
        if self._readers is None:
            self._readers = ThreadPoolExecutor(
                self._readers_count, thread_name_prefix="convodb-sqlite-reader"
            )
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._run, work)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
        try:
            return work(connection)
        finally:
            if connection.in_transaction:  # work that failed half-way, or forgot to end it
                connection.rollback()

    def _connect(self) -> sqlite3.Connection:
        connect: Callable[..., sqlite3.Connection] = sqlite3.connect
        connection = connect(
            *self._args, **self._kwargs, isolation_level=None, check_same_thread=False
        )
        try:
            # The same set-up as the engine's connections (see convodb._dialect).
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            for listener in self.on_connect:
                listener(connection)
        except BaseException:
            connection.close()
            raise
        with self._guard:
            self._connections.append(connection)
        return connection

    async def close(self) -> None:
        """Stop the threads and close their connections; later calls open new ones."""
        executors = [e for e in (self._writer, self._readers) if e is not None]
        self._writer = self._readers = None
        self._local = threading.local()
        for executor in executors:
            await asyncio.to_thread(executor.shutdown, wait=True)
        with self._guard:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()


class PgConnections:
    """An asyncpg pool per event loop, opened on first use."""

    def __init__(self, kwargs: dict[str, Any], *, max_size: int) -> None:
        self._kwargs, self._max_size = kwargs, max_size
        self._pool: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Future[Any] | None = None
        self.on_connect: list[Callable[[Any], None]] = []
        """Called with each new asyncpg connection (tests log its queries so)."""

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """An asyncpg connection in autocommit; a broken one is closed, not pooled again."""
        pool = await self._current()
        async with pool.acquire() as connection:
            yield connection

    async def _current(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is loop:
            return self._pool
        if self._opening is not None and self._loop is loop:
            return await asyncio.shield(self._opening)
        if self._pool is not None:  # made on a loop that is gone or not this one
            self._pool.terminate()
            self._pool = None
        self._loop, self._opening = loop, loop.create_future()
        opening = self._opening
        try:
            import asyncpg  # type: ignore[import-untyped]

            self._pool = await asyncpg.create_pool(
                **self._kwargs,
                min_size=0,
                max_size=self._max_size,
                init=self._init,
                reset=_no_reset,
            )
        except BaseException as exc:
            self._opening = None
            opening.set_exception(exc)
            opening.exception()  # retrieved: waiters see it, nobody else needs to
            raise
        self._opening = None
        opening.set_result(self._pool)
        return self._pool

    async def close(self) -> None:
        pool, self._pool, self._loop = self._pool, None, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=10)
        except (RuntimeError, TimeoutError):  # another loop's pool, or a hung connection
            pool.terminate()

    async def _init(self, connection: Any) -> None:
        await _pg_codecs(connection)
        for listener in self.on_connect:
            listener(connection)


async def _pg_codecs(connection: Any) -> None:
    # What SQLAlchemy's asyncpg dialect installs on its connections, so that rows decode the
    # same way on either: JSON in binary format (JSONB with its version byte).
    await connection.set_type_codec(
        "json",
        encoder=str.encode,
        decoder=lambda b: json.loads(b.decode()),
        schema="pg_catalog",
        format="binary",
    )
    await connection.set_type_codec(
        "jsonb",
        encoder=lambda s: b"\x01" + s.encode(),
        decoder=lambda b: {} if b == b"\x01{}" else json.loads(b[1:].decode()),
        schema="pg_catalog",
        format="binary",
    )


async def _no_reset(_connection: Any) -> None:
    """The hot path leaves no session state (no LISTEN, advisory lock, temp table, SET)."""


DriverConnections = SqliteThreads | PgConnections


def driver_connections(
    engine: AsyncEngine, connect_args: dict[str, Any], pool_size: int
) -> DriverConnections | None:
    """The hot path's own connections for the engine's database, or ``None`` to use the engine.

    ``None`` for an in-memory SQLite database (every connection would see another database)
    and for an engine whose connections come from a creator function convodb cannot repeat.
    """
    url, dialect = engine.url, engine.dialect
    args, kwargs = dialect.create_connect_args(url)
    kwargs = {**kwargs, **connect_args}
    if dialect.name == "sqlite":
        kwargs.pop("check_same_thread", None)  # the threads set it
        if url.database in (None, "", ":memory:") or "mode=memory" in str(url):
            return None
        return SqliteThreads(list(args), kwargs, readers=SQLITE_READERS)
    if dialect.name == "postgresql":
        cache_size = kwargs.pop("prepared_statement_cache_size", None)
        kwargs.pop("prepared_statement_name_func", None)
        if cache_size is not None:
            kwargs["statement_cache_size"] = cache_size
        return PgConnections(kwargs, max_size=pool_size)
    return None
