"""SQLite, the embedded default: aiosqlite for the engine, threads of convodb's own for the
hot path.

The connection set-up that makes SQLite a good embedded store: WAL (readers never block the
writer), a busy timeout (writers queue instead of failing; ``?timeout=SECONDS`` in the URL
overrides it), foreign keys on (they are off by default and deletes cascade through them),
``synchronous=NORMAL`` (durable across process crashes; the documented pairing with WAL).

SQLite transactions: the ``sqlite3`` module begins a transaction implicitly before the first
INSERT/UPDATE/DELETE and runs a SELECT outside any transaction. convodb relies on that: a read
never holds a snapshot that a later write would have to upgrade (an upgrade fails at once with
SQLITE_BUSY when another writer committed meanwhile), and an append's first statement is the
write that takes the lock, waiting up to the busy timeout, before anything is read.

The hot path's own connections (:class:`SqliteThreads`): one writer thread and a few reader
threads, each with its own ``sqlite3`` connection in autocommit mode. A whole operation
(``BEGIN IMMEDIATE``, the seq bump, the insert, ``COMMIT``; or a read and its decoding) runs
in the thread in one hop. In-process writers queue on the one writer thread instead of
polling SQLite's lock with the busy handler's sleeps; writers in other processes still wait on
the lock up to the busy timeout. A cancelled caller cannot leave a transaction open: the
thread always ends what it began (a cancelled append may still commit; the caller just does
not hear of it). The threads start lazily, work on any event loop and in a forked child, stop
in ``close`` (``Database.dispose``) and when their ``SqliteThreads`` is garbage-collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, Table, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.sqlite.aiosqlite import dialect as aiosqlite_dialect
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import Insert
from sqlalchemy.util import await_

from .. import _statements as statements
from ..errors import ConvodbError, StoreBusyError, StoreUnavailableError
from ._base import Backend, Compiled, DriverConnections, Row, Timeouts, bump_seq, driver

__all__ = ["SQLITE_BUSY_TIMEOUT", "SQLITE_PRAGMAS", "SQLiteBackend", "SqliteThreads"]

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT = 30.0
"""Seconds a SQLite writer waits for the write lock before StoreBusyError."""
SQLITE_READERS = 4
"""Reader threads: SQLite releases the GIL while it reads, so a few overlap usefully."""
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
"""Every SQLite connection's set-up, the engine's and the threads'."""


class SQLiteBackend(Backend):
    """aiosqlite: one thread hop per statement on the driver.

    The ``sqlite3`` module opens a transaction before the first write on its connection, so in
    the session's connection a driver write joins the session's transaction; on a connection of
    its own the append commits (or rolls back) itself.
    """

    name = "sqlite"
    schemes = ("sqlite",)
    driver_name = "aiosqlite"
    upgrades_on_open = True  # the embedded default: nobody else is there to run the upgrade
    has_driver_connections = True

    @classmethod
    def engine_options(cls, url: URL, *, pool_size: int, timeouts: Timeouts) -> dict[str, Any]:
        if url.database in (None, "", ":memory:"):
            # Every connection to :memory: is a new, empty database: share one connection.
            return {"poolclass": StaticPool}
        options: dict[str, Any] = {
            # Every path ends its own transactions (the session and SQLAlchemy connections
            # roll back what they began, the hot path commits or rolls back on the driver),
            # so the pool's extra ROLLBACK on each return would only cost a thread hop.
            "pool_reset_on_return": None,
            "pool_size": pool_size,
            "max_overflow": 0,
            "pool_timeout": timeouts.pool,
        }
        if "timeout" not in url.query:  # sqlite3's busy timeout; ?timeout=SECONDS overrides
            options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
        return options

    @classmethod
    def finish_engine_options(
        cls, url: URL, options: dict[str, Any], timeouts: Timeouts
    ) -> dict[str, Any]:
        if {"creator", "async_creator"} & set(options) or "poolclass" in options:
            return options  # the caller's way, or the one shared in-memory connection
        args, kwargs = aiosqlite_dialect().create_connect_args(url)
        kwargs = {**kwargs, **options.get("connect_args", {})}
        return options | {
            "async_creator": functools.partial(_aiosqlite_connect, list(args), kwargs)
        }

    @classmethod
    def driver_connections(
        cls,
        engine: AsyncEngine,
        connect_args: dict[str, Any],
        *,
        max_size: int,
        timeouts: Timeouts,
    ) -> DriverConnections | None:
        # None for an in-memory database: every connection would see another database.
        url = engine.url
        if url.database in (None, "", ":memory:") or "mode=memory" in str(url):
            return None
        args, kwargs = engine.dialect.create_connect_args(url)
        kwargs = {**kwargs, **connect_args}
        kwargs.pop("check_same_thread", None)  # each connection stays in its one thread
        return SqliteThreads(list(args), kwargs, readers=SQLITE_READERS)

    def configure(self, engine: AsyncEngine, timeouts: Timeouts | None = None) -> None:
        super().configure(engine, timeouts)
        in_memory = engine.url.database in (None, "", ":memory:")

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                for pragma in SQLITE_PRAGMAS:
                    # An in-memory database has no WAL; it ignores synchronous.
                    if not in_memory or "foreign_keys" in pragma:
                        cursor.execute(pragma)
            finally:
                cursor.close()

        @event.listens_for(engine.sync_engine, "invalidate")
        def _release_write_lock(dbapi_connection: Any, _record: Any, _exception: Any) -> None:
            # A task cancelled inside a statement (a request timeout) makes SQLAlchemy invalidate
            # the connection, and terminating an aiosqlite connection stops its thread without
            # closing the database handle: an open write transaction would keep the file locked
            # until the garbage collector finds the handle. Roll it back first.
            raw = getattr(dbapi_connection, "driver_connection", None)
            if raw is None:
                return
            with contextlib.suppress(Exception):
                await_(raw.rollback())

    @classmethod
    def classify(cls, error: BaseException) -> ConvodbError | None:
        name = getattr(error, "sqlite_errorname", None)
        if name is None:
            return None
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return StoreBusyError(f"the database is busy ({name}); retry the operation")
        if name.startswith(("SQLITE_CANTOPEN", "SQLITE_FULL", "SQLITE_READONLY")):
            return StoreUnavailableError(f"the database file cannot be written ({name})")
        return None

    @classmethod
    def connect_failure(cls, error: BaseException) -> str:
        orig = getattr(error, "orig", None) or error
        name = getattr(orig, "sqlite_errorname", None)
        if name:
            return f"the database file cannot be opened ({name}: {orig})"
        return super().connect_failure(error)

    def insert_ignoring_conflicts(self, table: Table) -> Insert:
        return sqlite.insert(table).on_conflict_do_nothing()

    def migration_transaction(
        self, connection: Connection
    ) -> contextlib.AbstractContextManager[Any]:
        return _migration_transaction(connection)

    # dbstat: one row per page of every table and index, where SQLite was built with it
    # (Python's usually is); without it the sizes are unknown.
    table_sizes_sql = (
        "SELECT m.tbl_name, SUM(d.pgsize) FROM dbstat AS d "
        "JOIN sqlite_master AS m ON m.name = d.name "
        "WHERE m.tbl_name IN :names GROUP BY m.tbl_name"
    )

    async def table_sizes(
        self, session: AsyncSession, names: Sequence[str]
    ) -> dict[str, int | None]:
        try:  # a failed statement leaves SQLite's transaction as it was
            return await super().table_sizes(session, names)
        except OperationalError:  # no dbstat
            return dict.fromkeys(names)

    def integrity_violations(self, connection: Connection) -> list[Any]:
        return list(connection.exec_driver_sql("PRAGMA foreign_key_check").all())

    async def rows(
        self,
        session: AsyncSession,
        statement: Select[Any],
        params: dict[str, Any],
        *,
        own: bool,
        into: Row | None = None,
    ) -> list[Any]:
        compiled = self._compile(statement)
        sql, args = compiled.sql, compiled.args(params)
        if own and isinstance(self.connections, SqliteThreads):
            return await self.connections.read(
                lambda connection: compiled.decode(connection.execute(sql, args).fetchall(), into)
            )
        async with driver(self, session, own=own) as connection:
            return compiled.decode(await connection.execute_fetchall(sql, args), into)

    async def append(
        self,
        session: AsyncSession,
        owner: dict[str, Any],
        rows: list[dict[str, Any]],
        *,
        own: bool,
        attachments: Sequence[dict[str, Any]] = (),
    ) -> int | None:
        bump, insert = self._compile(bump_seq(owner)), self._compile(statements.INSERT_MESSAGES)
        bump_args = bump.args({**owner, "n": len(rows)})
        # Bound before the hop, but for the seqs: they are known once the bump has run.
        insert_args = insert.many_args(rows)
        attach = self._compile(self.insert_attachments)
        attach_args = attach.many_args(attachments) if attachments else None
        if own and isinstance(self.connections, SqliteThreads):

            def append(connection: sqlite3.Connection) -> int | None:
                # One thread hop for the whole transaction. BEGIN IMMEDIATE takes the write
                # lock first (waiting up to the busy timeout for other processes).
                connection.execute("BEGIN IMMEDIATE")
                bumped = connection.execute(bump.sql, bump_args).fetchall()
                if not bumped:
                    connection.rollback()
                    return None
                last_seq = int(bumped[0][0])
                _insert(connection, insert, insert_args, last_seq)
                if attach_args:
                    connection.executemany(attach.sql, attach_args)
                connection.commit()
                return last_seq

            return await self.connections.write(append)
        async with driver(self, session, own=own) as connection:
            try:
                bumped = await connection.execute_fetchall(bump.sql, bump_args)
                last_seq = int(next(iter(bumped))[0]) if bumped else None
                if last_seq is not None:
                    _number(insert, insert_args, last_seq)
                    await connection.executemany(insert.sql, insert_args)
                    if attach_args:
                        await connection.executemany(attach.sql, attach_args)
                if own:
                    await (connection.commit() if last_seq is not None else connection.rollback())
            except BaseException:
                if own:
                    await connection.rollback()
                raise
        return last_seq


def _number(insert: Compiled, args: list[list[Any]], last_seq: int) -> None:
    """Give the bound rows of an append their seqs, the last one ``last_seq``."""
    at, first = insert.names.index("seq"), last_seq - len(args) + 1
    for i, values in enumerate(args):
        values[at] = first + i


def _insert(
    connection: sqlite3.Connection, insert: Compiled, args: list[list[Any]], last_seq: int
) -> None:
    _number(insert, args, last_seq)
    if len(args) == 1:
        connection.execute(insert.sql, args[0])
    else:
        connection.executemany(insert.sql, args)


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


async def _aiosqlite_connect(args: list[Any], kwargs: dict[str, Any]) -> Any:
    """An aiosqlite connection, as SQLAlchemy's dialect opens one, except on failure.

    A failed connect makes aiosqlite stop its thread without waiting for it; the thread then
    reports to the event loop, and if that loop has ended meanwhile (a command that exits on
    the error), it dies with a traceback on stderr. Waiting here for the thread to end, while
    the loop runs, leaves nothing to report later.
    """
    import aiosqlite

    connection = aiosqlite.connect(*args, **kwargs)
    connection._thread.daemon = True  # as SQLAlchemy's dialect sets it
    try:
        return await connection
    except BaseException:
        await asyncio.to_thread(connection._thread.join, SQLITE_BUSY_TIMEOUT)
        raise


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
    """Threads, each with a queue of its own and a connection of its own.

    A hop is a queue put and one ``call_soon_threadsafe`` back to the caller's loop, as
    aiosqlite's is (an executor adds a concurrent future chained to an asyncio one). Work goes
    to the first idle thread, the thread with the least work when none is idle: sequential
    calls all find the same thread, warm, where threads sharing one queue would take turns.
    The threads are daemons, stopped (and their connections closed) by :meth:`stop`, when the
    object is collected, or at interpreter exit, whichever comes first: a forgotten Database
    never keeps a process from exiting.
    """

    def __init__(self, count: int, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self.pid = os.getpid()
        """The process that started the threads: a forked child (a pre-forking server) has
        none of them and starts its own."""
        self._queues: list[queue.SimpleQueue[_Work | None]] = [
            queue.SimpleQueue() for _ in range(count)
        ]
        self._pending = [0] * count
        """Work put on each thread's queue and not yet answered. Only a hint for choosing a
        thread: callers on event loops in two threads at once may miscount it, which can
        send work to a busy thread but never loses or repeats any."""
        threads = [
            threading.Thread(
                target=_serve, args=(work_queue, connect), name=f"{name}-{i}", daemon=True
            )
            for i, work_queue in enumerate(self._queues)
        ]
        for thread in threads:
            thread.start()
        self._finalizer = weakref.finalize(self, _stop, self._queues, threads)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        pending = self._pending
        i = pending.index(min(pending)) if len(pending) > 1 else 0
        pending[i] += 1
        try:
            self._queues[i].put((loop, future, work))
            return await future
        finally:
            pending[i] -= 1

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


def _stop(
    work_queues: list[queue.SimpleQueue[_Work | None]], threads: list[threading.Thread]
) -> None:
    for work_queue in work_queues:
        work_queue.put(None)
    for thread in threads:
        if thread is not threading.current_thread():
            thread.join()


@contextlib.contextmanager
def _migration_transaction(connection: Connection) -> Iterator[None]:
    # Python's sqlite3 module runs DDL outside any transaction unless one was begun
    # explicitly; BEGIN IMMEDIATE takes the write lock first (another upgrader waits up to the
    # busy timeout). Foreign keys are off while the schema changes, as SQLite's documentation
    # prescribes for ALTER TABLE: a batch operation drops and recreates a table, and with them
    # on, dropping a parent table would cascade into its children. The migration checks them
    # (``integrity_violations``) before the commit; they are restored after.
    foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.commit()  # ends SQLAlchemy's implicit transaction; sqlite3 began none
    try:
        with connection.begin():
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            yield
    finally:
        connection.exec_driver_sql(f"PRAGMA foreign_keys={1 if foreign_keys else 0}")
        connection.commit()
