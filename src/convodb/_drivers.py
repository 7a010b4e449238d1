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
- PostgreSQL (:class:`PgConnections`): a minimal pool of asyncpg connections with SQLAlchemy's
  JSON codecs and no reset on release (nothing the hot path runs leaves session state behind),
  bound to the event loop that uses it; another loop starts afresh.

Both open connections lazily and close them in :meth:`close` (``Database.dispose``), after
which they open again on demand, as an engine's pool does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator, Callable
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
        self._writer: _Workers | None = None
        self._readers: _Workers | None = None
        self.on_connect: list[Callable[[sqlite3.Connection], None]] = []
        """Called with each new connection, in its thread (tests trace statements so)."""

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on the writer connection; it must end any transaction it begins."""
        if self._writer is None or self._writer.pid != os.getpid():
            self._writer = _Workers(1, self._connect, "convodb-sqlite-writer")
        return await self._writer.run(work)

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on a reader connection (autocommit: each SELECT sees the latest commit)."""
        if self._readers is None or self._readers.pid != os.getpid():
            self._readers = _Workers(self._readers_count, self._connect, "convodb-sqlite-reader")
        return await self._readers.run(work)

    def _connect(self) -> sqlite3.Connection:
        connect: Callable[..., sqlite3.Connection] = sqlite3.connect
        connection = connect(*self._args, **self._kwargs, isolation_level=None)
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
        return connection

    async def close(self) -> None:
        """Stop the threads, which close their connections; later calls start new ones."""
        workers = [w for w in (self._writer, self._readers) if w is not None]
        self._writer = self._readers = None
        for worker in workers:
            await asyncio.to_thread(worker.stop)


_Work = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[sqlite3.Connection], Any]]


class _Workers:
    """Threads sharing one queue of work, each running it on a connection of its own.

    A hop costs a queue put and one ``call_soon_threadsafe`` back, as aiosqlite's does; an
    executor's concurrent future and its chaining to an asyncio future cost ~30% more. The
    threads are daemons, stopped (and their connections closed) by :meth:`stop`, when the
    object is collected, or at interpreter exit, whichever comes first: a forgotten Database
    never keeps a process from exiting.
    """

    def __init__(self, count: int, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self.pid = os.getpid()
        """The process that started the threads: a forked child (a pre-forking server) has
        none of them and starts its own."""
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        threads = [
            threading.Thread(
                target=_serve, args=(self._queue, connect), name=f"{name}-{i}", daemon=True
            )
            for i in range(count)
        ]
        for thread in threads:
            thread.start()
        self._finalizer = weakref.finalize(self, _stop, self._queue, threads)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, work))
        return await future

    def stop(self) -> None:
        """Let the threads finish their queued work, then end them (blocks until they do)."""
        if self.pid == os.getpid():
            self._finalizer()
        else:  # a forked child: the threads are the parent's
            self._finalizer.detach()


def _serve(
    work_queue: queue.SimpleQueue[_Work | None], connect: Callable[[], sqlite3.Connection]
) -> None:
    connection: sqlite3.Connection | None = None
    try:
        while (item := work_queue.get()) is not None:
            loop, future, work = item
            try:
                if connection is None:
                    connection = connect()
                try:
                    result = work(connection)
                finally:
                    if connection.in_transaction:  # work that failed half-way
                        connection.rollback()
            except BaseException as exc:  # handed to the awaiting task
                _reply(loop, _fail, future, exc)
            else:
                _reply(loop, _succeed, future, result)
    finally:
        if connection is not None:
            connection.close()


def _reply(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
        loop.call_soon_threadsafe(callback, *args)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # the caller may have been cancelled meanwhile
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _stop(work_queue: queue.SimpleQueue[_Work | None], threads: list[threading.Thread]) -> None:
    for _ in threads:
        work_queue.put(None)
    for thread in threads:
        if thread is not threading.current_thread():
            thread.join()


class PgConnections:
    """asyncpg connections of the hot path's own: a minimal pool, per event loop.

    asyncpg's ``Pool`` costs ~15 us per acquire and release (a task per release, to shield its
    reset): a tenth of a request's CPU here. The hot path needs none of what it buys: its
    statements run in autocommit and leave no session state. So: at most ``max_size``
    connections (a semaphore), idle ones reused newest first, new ones opened on demand. A
    connection that saw anything but a server-side error (a cancellation mid-query, a lost
    connection) is terminated, never reused. Connections belong to the event loop that opened
    them; on another loop the pool starts afresh.
    """

    def __init__(self, kwargs: dict[str, Any], *, max_size: int) -> None:
        self._kwargs, self._max_size = kwargs, max_size
        self._pid = os.getpid()
        self._inherited: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(max_size)
        self._idle: list[Any] = []
        self._generation = 0  # moves on close and on a new loop: older connections retire
        self.on_connect: list[Callable[[Any], None]] = []
        """Called with each new asyncpg connection (tests log its queries so)."""

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """An asyncpg connection in autocommit, returned to the pool after the block."""
        loop = asyncio.get_running_loop()
        if self._pid != os.getpid():
            self._forked()
        if self._loop is not loop:
            self._restart(loop)
        slots, generation = self._slots, self._generation
        await slots.acquire()
        try:
            connection = await self._take()
            try:
                yield connection
            except BaseException as exc:
                self._give(connection, generation, reusable=_is_server_error(exc))
                raise
            self._give(connection, generation, reusable=True)
        finally:
            slots.release()

    def _forked(self) -> None:
        # A forked child shares its parent's sockets: closing one here would send the server
        # a Terminate for the parent's session, and so would collecting it. Keep them, unused.
        self._pid = os.getpid()
        self._inherited.extend(self._idle)
        self._idle, self._loop, self._generation = [], None, self._generation + 1

    def _restart(self, loop: asyncio.AbstractEventLoop) -> None:
        for connection in self._idle:  # another loop's: they cannot be awaited here
            connection.terminate()
        self._loop, self._idle, self._generation = loop, [], self._generation + 1
        self._slots = asyncio.Semaphore(self._max_size)

    async def _take(self) -> Any:
        while self._idle:
            connection = self._idle.pop()
            if not connection.is_closed():
                return connection
        import asyncpg  # type: ignore[import-untyped]

        connection = await asyncpg.connect(**self._kwargs)
        try:
            await _pg_codecs(connection)
            for listener in self.on_connect:
                listener(connection)
        except BaseException:
            connection.terminate()
            raise
        return connection

    def _give(self, connection: Any, generation: int, *, reusable: bool) -> None:
        if (
            reusable
            and generation == self._generation
            and not connection.is_closed()
            and not connection.is_in_transaction()
        ):
            self._idle.append(connection)
        else:
            connection.terminate()

    async def close(self) -> None:
        """Close the idle connections; ones in use are closed when they come back."""
        idle, self._idle = self._idle, []
        self._loop, self._generation = None, self._generation + 1
        for connection in idle:
            try:
                await asyncio.wait_for(connection.close(), timeout=5)
            except (RuntimeError, TimeoutError, OSError):  # another loop's, or hung
                connection.terminate()


def _is_server_error(exc: BaseException) -> bool:
    """Whether the server answered with an error: the connection is idle and fine."""
    import asyncpg

    return isinstance(exc, asyncpg.PostgresError)


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
        kwargs.pop("check_same_thread", None)  # each connection stays in its one thread
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
