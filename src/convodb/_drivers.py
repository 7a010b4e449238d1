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
  what it began (a cancelled append may still commit; the caller just does not hear of it).
- PostgreSQL (:class:`PgPool`): asyncpg's own ``Pool``, with SQLAlchemy's JSON codecs, the
  ``Database``'s timeouts and no reset query (see the class).

Both open connections lazily, work on any event loop and in a forked child, and close them in
``close`` (``Database.dispose``), after which they open again on demand, as an engine's pool
does. The SQLite threads also stop when their ``SqliteThreads`` is garbage-collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import queue
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from .errors import StoreUnavailableError

__all__ = ["SQLITE_PRAGMAS", "PgPool", "SqliteThreads", "Timeouts", "driver_connections"]

T = TypeVar("T")

SQLITE_READERS = 4
"""Reader threads: SQLite releases the GIL while it reads, so a few overlap usefully."""
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
"""Every SQLite connection's set-up, the engine's and the threads' (see ``convodb._dialect``)."""


class SqliteThreads:
    """Thread-confined ``sqlite3`` connections: one writer, a few readers."""

    def __init__(self, args: list[Any], kwargs: dict[str, Any], *, readers: int) -> None:
        self._readers_count = readers
        self._writer: _Workers | None = None
        self._readers: _Workers | None = None
        self.on_connect: list[Callable[[sqlite3.Connection], None]] = []
        """Called with each new connection, in its thread (tests trace statements so)."""
        # What the threads run holds no reference to this object, so that it can be collected
        # (which stops them) while they run.
        self._connect = functools.partial(_sqlite_connect, args, kwargs, self.on_connect)

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

    async def close(self) -> None:
        """Stop the threads, which close their connections; later calls start new ones."""
        workers = [w for w in (self._writer, self._readers) if w is not None]
        self._writer = self._readers = None
        for worker in workers:
            await asyncio.to_thread(worker.stop)


def _sqlite_connect(
    args: list[Any],
    kwargs: dict[str, Any],
    on_connect: list[Callable[[sqlite3.Connection], None]],
) -> sqlite3.Connection:
    connect: Callable[..., sqlite3.Connection] = sqlite3.connect
    connection = connect(*args, **kwargs, isolation_level=None)
    try:
        for pragma in SQLITE_PRAGMAS:
            connection.execute(pragma)
        for listener in on_connect:
            listener(connection)
    except BaseException:
        connection.close()
        raise
    return connection


_Work = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[sqlite3.Connection], Any]]


class _Workers:
    """Threads sharing one queue of work, each running it on a connection of its own.

    A hop is a queue put and one ``call_soon_threadsafe`` back to the caller's loop, as
    aiosqlite's is (an executor adds a concurrent future chained to an asyncio one). The
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
            _run(item, connection or (connection := _connect_or_fail(item, connect)))
            # Nothing of the work stays referenced while the thread waits for the next: its
            # closure may hold what owns this thread, which must stay collectable.
            del item
    finally:
        if connection is not None:
            connection.close()


def _connect_or_fail(item: _Work, connect: Callable[[], sqlite3.Connection]) -> Any:
    """A new connection, or ``None`` after handing the connect error to the waiting task."""
    try:
        return connect()
    except BaseException as exc:
        _reply(item[0], _fail, item[1], exc)
        return None


def _run(item: _Work, connection: sqlite3.Connection | None) -> None:
    loop, future, work = item
    if connection is None:  # connecting failed; the caller was told
        return
    try:
        try:
            result = work(connection)
        finally:
            if connection.in_transaction:  # work that failed half-way
                connection.rollback()
    except BaseException as exc:  # handed to the awaiting task
        _reply(loop, _fail, future, exc)
    else:
        _reply(loop, _succeed, future, result)


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


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a ``Database`` waits on the database server, in seconds (``None``: no limit)."""

    connect: float
    """Opening one connection (TCP, TLS, authentication)."""
    pool: float
    """Waiting for a connection from a pool, connecting included."""
    statement: float | None
    """One statement: the server cancels it after this long (``statement_timeout``), and the
    client gives up on a connection that has not answered a second after that."""
    idle: float
    """A pooled connection unused for this long is closed."""

    def server_settings(self) -> dict[str, str]:
        """PostgreSQL session settings that apply these timeouts on the server."""
        if self.statement is None:
            return {}
        return {"statement_timeout": str(max(1, round(self.statement * 1000)))}

    @property
    def command(self) -> float | None:
        """asyncpg's client-side ``command_timeout``: the server's, plus time for its answer."""
        return None if self.statement is None else self.statement + _ANSWER_GRACE


_ANSWER_GRACE = 1.0


class PgPool:
    """The hot path's asyncpg connections: asyncpg's own ``Pool``, one per event loop.

    asyncpg's pool handles what a hand-written one got wrong: a connection is never handed out
    twice, a cancellation is waited for or the connection terminated, idle connections close
    after ``Timeouts.idle``, and acquiring one waits at most ``Timeouts.pool``. Two things are
    convodb's own:

    - **No reset query on release.** The hot path runs single statements in autocommit and
      leaves no session state, so the default reset (``RESET ALL``, ``UNLISTEN *``, ...) would
      only cost a round trip per statement. Instead a connection on which anything but a server
      error happened (a cancellation, a timeout, a lost connection, an argument the driver
      refused after it had sent the statement) is terminated, never reused: such a connection
      may be left mid-protocol, holding the statement's locks.
    - **Loops and processes.** An asyncpg pool belongs to the event loop that made it. On
      another loop (``asyncio.run`` twice) the old pool is terminated and a new one made; in a
      forked child (a pre-forking server) the parent's pool is left untouched -- closing its
      connections there would end the parent's sessions -- and the child makes its own.

    Errors of the connection, not of the statement, are raised as ``StoreUnavailableError``.
    """

    def __init__(self, kwargs: dict[str, Any], *, max_size: int, timeouts: Timeouts) -> None:
        self._kwargs, self._max_size, self._timeouts = kwargs, max_size, timeouts
        self._pool: Any = None
        self._ready: asyncio.Future[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = os.getpid()
        self._inherited: list[Any] = []  # a parent's pools, kept from the collector (see above)
        self.on_connect: list[Callable[[Any], None]] = []
        """Called with each new asyncpg connection (tests log its queries so)."""

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """An asyncpg connection in autocommit, returned to the pool after the block.

        Raises:
            StoreUnavailableError: no connection within ``Timeouts.pool``, the server refused
                one, or the connection was lost or timed out during the block.
        """
        pool = self._pool
        if self._loop is not asyncio.get_running_loop() or self._pid != os.getpid():
            pool = self._start()
        ready = self._ready
        assert ready is not None
        try:
            if not ready.done():
                await asyncio.shield(ready)
            connection = await pool.acquire(timeout=self._timeouts.pool)
        except (OSError, _asyncpg().PostgresError, _asyncpg().InterfaceError) as exc:
            # TimeoutError is an OSError: a pool that stayed full, or a server that did not
            # answer the connection attempt.
            raise StoreUnavailableError(_connect_failure(exc, self._timeouts)) from exc
        try:
            yield connection
        except BaseException as exc:
            if _is_server_error(exc):
                raise
            lost = _closed(connection) or isinstance(
                exc, (OSError, _asyncpg().PostgresConnectionError)
            )
            with contextlib.suppress(_asyncpg().InterfaceError):  # closed and released already
                connection.terminate()
            if lost and isinstance(exc, Exception):
                raise StoreUnavailableError(_lost(exc, self._timeouts)) from exc
            raise
        finally:
            with contextlib.suppress(Exception):  # a terminated connection just goes back
                await pool.release(connection, timeout=self._timeouts.pool)

    def _start(self) -> Any:
        asyncpg = _asyncpg()
        loop = asyncio.get_running_loop()
        if self._pid != os.getpid():
            self._pid = os.getpid()
            if self._pool is not None:
                self._inherited.append(self._pool)
        elif self._pool is not None:
            # Another loop's pool: its connections are unusable here. Marking them closed is
            # all that can be done; their sockets go with the garbage collector.
            with contextlib.suppress(Exception):
                self._pool.terminate()
        timeouts = self._timeouts
        kwargs = dict(self._kwargs)
        settings = {**timeouts.server_settings(), **kwargs.pop("server_settings", {})}
        self._pool = asyncpg.create_pool(
            min_size=0,
            max_size=self._max_size,
            max_inactive_connection_lifetime=timeouts.idle,
            timeout=timeouts.connect,
            command_timeout=timeouts.command,
            server_settings=settings,
            init=self._init_connection,
            reset=_no_reset,
            **kwargs,
        )
        self._loop = loop
        self._ready = loop.create_task(_initialize(self._pool))
        return self._pool

    async def _init_connection(self, connection: Any) -> None:
        await _pg_codecs(connection)
        for listener in self.on_connect:
            listener(connection)

    async def close(self) -> None:
        """Close the pool's connections (waiting up to ``Timeouts.pool`` for ones in use);
        the next use makes a new pool."""
        pool, self._pool, self._loop, self._ready = self._pool, None, None, None
        if pool is None:
            return
        if self._pid != os.getpid():
            self._inherited.append(pool)
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=self._timeouts.pool)
        except (RuntimeError, TimeoutError, OSError):  # another loop's, or hung
            with contextlib.suppress(Exception):
                pool.terminate()


def _is_server_error(exc: BaseException) -> bool:
    """Whether the server answered with an error: the connection is idle and fine.

    asyncpg raises some errors of its own as ``PostgresError`` subclasses (an argument out of
    range for its type, after the statement was sent): only the server's carry a severity.
    """
    return isinstance(exc, _asyncpg().PostgresError) and exc.as_dict().get("severity") is not None


def _closed(connection: Any) -> bool:
    try:
        return bool(connection.is_closed())
    except _asyncpg().InterfaceError:  # a connection that closed is released at once
        return True


def _connect_failure(exc: BaseException, timeouts: Timeouts) -> str:
    if isinstance(exc, TimeoutError):
        return f"no database connection within {timeouts.pool:g} s"
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return f"the database refused the connection (SQLSTATE {sqlstate})"
    return f"the database cannot be reached ({type(exc).__name__})"


def _lost(exc: BaseException, timeouts: Timeouts) -> str:
    if isinstance(exc, TimeoutError) and timeouts.command is not None:
        return f"the database did not answer within {timeouts.command:g} s"
    return f"the database connection was lost ({type(exc).__name__})"


async def _no_reset(_connection: Any) -> None:
    """asyncpg's ``reset`` hook: nothing (see :class:`PgPool`; asyncpg still rolls back an
    open transaction before it calls this)."""


async def _initialize(pool: Any) -> None:
    await pool


_asyncpg_module: Any = None


def _asyncpg() -> Any:
    """asyncpg, imported on first use: it is an optional dependency (the postgres extra)."""
    global _asyncpg_module
    if _asyncpg_module is None:
        import asyncpg  # type: ignore[import-untyped]

        _asyncpg_module = asyncpg
    return _asyncpg_module


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


DriverConnections = SqliteThreads | PgPool


def driver_connections(
    engine: AsyncEngine, connect_args: dict[str, Any], *, max_size: int, timeouts: Timeouts
) -> DriverConnections | None:
    """The hot path's own connections for the engine's database, or ``None`` to use the engine.

    ``None`` for an in-memory SQLite database (every connection would see another database)
    and for a database convodb has no driver connections for.

    Args:
        connect_args: the engine's ``connect_args``, which the driver connections share.
        max_size: most connections open at once (PostgreSQL; SQLite has its fixed threads).
        timeouts: how long to wait on the server.
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
        # The pool applies these itself, from ``timeouts``.
        for name in ("timeout", "command_timeout"):
            kwargs.pop(name, None)
        if cache_size is not None:
            kwargs["statement_cache_size"] = cache_size
        return PgPool(kwargs, max_size=max_size, timeouts=timeouts)
    return None
