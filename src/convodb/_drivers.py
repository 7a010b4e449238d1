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
- PostgreSQL (:class:`PgConnections`): a small pool of asyncpg connections with SQLAlchemy's
  JSON codecs, the ``Database``'s timeouts and no reset query (see the class for why it is
  not asyncpg's ``Pool``, and what it guarantees).

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

from .errors import StoreBusyError, StoreUnavailableError

__all__ = ["SQLITE_PRAGMAS", "PgConnections", "SqliteThreads", "Timeouts", "driver_connections"]

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
    """Waiting for a pooled connection to come free."""
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


class PgConnections:
    """The hot path's asyncpg connections: a small pool of convodb's own, per event loop.

    asyncpg's ``Pool`` costs a task per release (a shield) and a timeout per acquire; on the
    hot path that was more than the statement's own client-side work (see
    ``benchmarks/results``). This pool keeps the guarantees that ``Pool`` gives:

    - at most ``max_size`` connections; a caller waits up to ``Timeouts.pool`` for one to
      come free (``StoreBusyError`` then), and ``Timeouts.connect`` for a new one to open;
    - every statement runs under asyncpg's ``command_timeout`` and the server's
      ``statement_timeout`` (``Timeouts.statement``);
    - a connection is reused only after a clean exit or a server error (the server answered:
      the connection is idle). One that saw anything else -- a cancellation, a timeout, a lost
      connection, an argument asyncpg refused after it had sent the statement -- is
      terminated, never reused: it may be mid-protocol, holding the statement's locks;
    - idle connections are closed after ``Timeouts.idle``, newest reused first;
    - connections belong to the event loop that opened them: on another loop (``asyncio.run``
      twice) the pool starts afresh; in a forked child (a pre-forking server) the parent's
      connections are kept unused -- closing them, even by the garbage collector, would end
      the parent's sessions -- and the child opens its own;
    - :meth:`close` closes the idle ones, and the ones in use when they come back.

    It sends no reset query: the hot path runs single statements in autocommit and leaves no
    session state behind. Errors of the connection, not of the statement, are raised as
    ``StoreUnavailableError``.
    """

    def __init__(self, kwargs: dict[str, Any], *, max_size: int, timeouts: Timeouts) -> None:
        self._kwargs = {
            **kwargs,
            "timeout": timeouts.connect,
            "command_timeout": timeouts.command,
            "server_settings": {**timeouts.server_settings(), **kwargs.get("server_settings", {})},
        }
        self._max_size, self._timeouts = max_size, timeouts
        self._pid = os.getpid()
        self._inherited: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(max_size)
        self._idle: list[tuple[Any, float]] = []  # (connection, when it came back), newest last
        self._reaper: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._generation = 0  # moves on close and on a new loop: older connections retire
        self.on_connect: list[Callable[[Any], None]] = []
        """Called with each new asyncpg connection (tests log its queries so)."""

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """An asyncpg connection in autocommit, returned to the pool after the block.

        Raises:
            StoreBusyError: every connection stayed in use for ``Timeouts.pool``.
            StoreUnavailableError: a new connection could not be opened, or the connection was
                lost or timed out during the block.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._pid != os.getpid():
            self._restart(loop)
        slots, generation = self._slots, self._generation
        if slots.locked():
            try:
                async with asyncio.timeout(self._timeouts.pool):
                    await slots.acquire()
            except TimeoutError:
                raise StoreBusyError(
                    f"all {self._max_size} database connections stayed in use for "
                    f"{self._timeouts.pool:g} s; retry the operation"
                ) from None
        else:
            await slots.acquire()  # a free slot: returns at once
        try:
            connection = await self._take()
        except BaseException:
            slots.release()
            raise
        reusable = False
        try:
            yield connection
            reusable = True
        except BaseException as exc:
            if _is_server_error(exc):
                reusable = True
                raise
            lost = connection.is_closed() or isinstance(
                exc, (OSError, _asyncpg().PostgresConnectionError)
            )
            if lost and isinstance(exc, Exception):
                raise StoreUnavailableError(_lost(exc, self._timeouts)) from exc
            raise
        finally:
            self._give(connection, generation, reusable=reusable)
            slots.release()

    def _restart(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._pid != os.getpid():
            # Another process's connections and timer: keep them, untouched (see above).
            self._pid = os.getpid()
            self._inherited.extend(connection for connection, _ in self._idle)
        else:
            # Another loop's: unusable here. Marking them closed is all that can be done;
            # their sockets go with the garbage collector.
            for connection, _ in self._idle:
                with contextlib.suppress(Exception):
                    connection.terminate()
            if self._reaper is not None:
                self._reaper.cancel()
        self._loop, self._idle, self._reaper = loop, [], None
        self._generation += 1
        self._slots = asyncio.Semaphore(self._max_size)

    async def _take(self) -> Any:
        while self._idle:
            connection, _ = self._idle.pop()
            if not connection.is_closed():
                return connection
        asyncpg = _asyncpg()
        try:
            connection = await asyncpg.connect(**self._kwargs)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailableError(_connect_failure(exc, self._timeouts)) from exc
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
            assert self._loop is not None
            self._idle.append((connection, self._loop.time()))
            if self._reaper is None:
                self._reaper = self._loop.call_later(self._timeouts.idle, self._reap)
        else:
            connection.terminate()

    def _reap(self) -> None:
        """Close the connections idle for ``Timeouts.idle``; look again when the next is due."""
        assert self._loop is not None
        self._reaper = None
        expired_before = self._loop.time() - self._timeouts.idle
        expired = [c for c, at in self._idle if at <= expired_before]
        self._idle = [(c, at) for c, at in self._idle if at > expired_before]
        for connection in expired:
            self._close_later(connection)
        if self._idle:
            due = self._idle[0][1] + self._timeouts.idle - self._loop.time()
            self._reaper = self._loop.call_later(max(due, 0.0), self._reap)

    def _close_later(self, connection: Any) -> None:
        task = asyncio.ensure_future(_close(connection, self._timeouts.pool))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close the idle connections; ones in use are closed when they come back."""
        idle = [connection for connection, _ in self._idle]
        self._idle, self._generation = [], self._generation + 1
        if self._reaper is not None and self._pid == os.getpid():
            self._reaper.cancel()
        self._reaper, self._loop = None, None
        if self._pid != os.getpid():
            self._inherited.extend(idle)
            return
        await asyncio.gather(*(_close(c, self._timeouts.pool) for c in idle), *self._closing)


async def _close(connection: Any, seconds: float) -> None:
    """Close gracefully (the server ends the session at once), or terminate."""
    try:
        await asyncio.wait_for(connection.close(), timeout=seconds)
    except (RuntimeError, TimeoutError, OSError, _asyncpg().PostgresError):
        # Another loop's, hung, or already lost.
        with contextlib.suppress(Exception):
            connection.terminate()


def _is_server_error(exc: BaseException) -> bool:
    """Whether the server answered with an error: the connection is idle and fine.

    asyncpg raises some errors of its own as ``PostgresError`` subclasses (an argument out of
    range for its type, after the statement was sent): only the server's carry a severity.
    """
    return isinstance(exc, _asyncpg().PostgresError) and exc.as_dict().get("severity") is not None


def _connect_failure(exc: BaseException, timeouts: Timeouts) -> str:
    if isinstance(exc, TimeoutError):
        return f"the database did not accept a connection within {timeouts.connect:g} s"
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return f"the database refused the connection (SQLSTATE {sqlstate})"
    return f"the database cannot be reached ({type(exc).__name__})"


def _lost(exc: BaseException, timeouts: Timeouts) -> str:
    if isinstance(exc, TimeoutError) and timeouts.command is not None:
        return f"the database did not answer within {timeouts.command:g} s"
    return f"the database connection was lost ({type(exc).__name__})"


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


DriverConnections = SqliteThreads | PgConnections


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
        return PgConnections(kwargs, max_size=max_size, timeouts=timeouts)
    return None
