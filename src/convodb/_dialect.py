"""Everything that differs between databases, in one place.

The service never asks which database it runs on; it calls into this module, which knows:

- how to turn a URL a user writes (``sqlite:///chat.db``, ``postgresql://...``) into the async
  driver's URL, and which driver extra provides it;
- the connection set-up SQLite needs to be a good embedded store: WAL (readers never block the
  writer), a busy timeout (writers queue instead of failing; ``?timeout=SECONDS`` in the URL
  overrides it), foreign keys on (they are off by default and deletes cascade through them),
  ``synchronous=NORMAL`` (durable across process crashes; the documented pairing with WAL);
- "insert unless the key exists", which each dialect spells differently;
- how long to wait on the server (connect, pool checkout, statement), and how many
  connections one ``Database`` may open;
- which driver errors mean "busy, retry" or "unreachable", by SQLSTATE and SQLite error name,
  never by matching message text.

SQLite transactions: the ``sqlite3`` module begins a transaction implicitly before the first
INSERT/UPDATE/DELETE and runs a SELECT outside any transaction. convodb relies on that: a read
never holds a snapshot that a later write would have to upgrade (an upgrade fails at once with
SQLITE_BUSY when another writer committed meanwhile), and an append's first statement is the
write that takes the lock, waiting up to the busy timeout, before anything is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy import JSON, Select, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import Insert
from sqlalchemy.util import await_

from . import _statements as statements
from ._drivers import SQLITE_PRAGMAS, DriverConnections, PgConnections, SqliteThreads, Timeouts
from .errors import ConvodbError, MissingDependencyError, StoreBusyError, StoreUnavailableError

__all__ = [
    "Backend",
    "async_url",
    "backend_for",
    "configure_engine",
    "engine_budget",
    "engine_options",
    "register_backend",
    "set_schema_checked",
    "translate_error",
    "unchecked_backend",
]

SQLITE_BUSY_TIMEOUT = 30.0
"""Seconds a SQLite writer waits for the write lock before StoreBusyError."""

# url scheme -> (async driver, the extra that installs it; None: a core dependency)
_DRIVERS: dict[str, tuple[str, str | None]] = {
    "sqlite": ("aiosqlite", None),
    "postgresql": ("asyncpg", "postgres"),
}


def async_url(url: str | URL) -> URL:
    """The URL with its async driver: ``sqlite:///x.db`` -> ``sqlite+aiosqlite:///x.db``.

    Raises:
        MissingDependencyError: the driver for this database is not installed.
        ValueError: the database is not one convodb supports.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgres":  # Heroku-style URLs
        backend = "postgresql"
    if backend not in _DRIVERS:
        raise ValueError(
            f"unsupported database {backend!r} in URL; convodb supports {sorted(_DRIVERS)}"
        )
    driver, extra = _DRIVERS[backend]
    if extra is not None:
        try:
            __import__(driver)
        except ImportError:
            raise MissingDependencyError(driver, extra) from None
    return parsed.set(drivername=f"{backend}+{driver}")


def engine_budget(max_connections: int) -> tuple[int, int]:
    """How ``max_connections`` splits: ``(engine pool, hot-path pool)``.

    The hot path (appends, reads, key lookups) gets most; the engine's pool serves the rest
    (creating, listing, updating conversations, keyed appends, a caller's own transactions).
    """
    if not isinstance(max_connections, int) or max_connections < 2:
        raise ValueError(f"max_connections must be an integer >= 2; got {max_connections!r}")
    engine = max(1, max_connections // 4)
    return engine, max_connections - engine


def engine_options(url: URL, *, max_connections: int, timeouts: Timeouts) -> dict[str, Any]:
    """Keyword arguments for ``create_async_engine`` that the database needs."""
    pool_size, _ = engine_budget(max_connections)
    if url.get_backend_name() == "sqlite":
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
    if url.get_backend_name() == "postgresql":
        # A fixed pool (no overflow): an overflow connection is closed on return, and a server
        # with more requests in flight would reconnect (TCP, auth, type introspection) on most
        # of them. No pool_pre_ping: on asyncpg it costs BEGIN, a ping and ROLLBACK on every
        # checkout. A connection that died in the pool fails its first statement, is
        # invalidated, and the caller gets StoreUnavailableError once.
        return {
            "pool_size": pool_size,
            "max_overflow": 0,
            "pool_timeout": timeouts.pool,
            "connect_args": {
                "timeout": timeouts.connect,
                "command_timeout": timeouts.command,
                "server_settings": timeouts.server_settings(),
            },
        }
    return {}


def configure_engine(engine: AsyncEngine, backend: Backend) -> None:
    """Install per-connection set-up (SQLite pragmas) and the translation of connect errors."""

    @event.listens_for(engine.sync_engine, "handle_error")
    def _connect_failed(context: Any) -> None:
        # No connection: the error came from opening one. Whatever its SQLSTATE (55000: the
        # database does not allow connections, 3D000: no such database, 28P01: bad password),
        # the database cannot be used now, and no statement ran.
        if context.connection is None and not context.is_pre_ping:
            error = context.original_exception
            if isinstance(error, Exception) and not isinstance(error, ConvodbError):
                translated = translate_error(error)
                if isinstance(translated, StoreBusyError):  # SQLite locked during set-up
                    raise translated from error
                raise StoreUnavailableError(_connect_failure(error)) from error

    if engine.dialect.name == "postgresql":
        _one_loop_per_connection(engine, backend)
    if engine.dialect.name != "sqlite":
        return
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
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is None:
            return
        with contextlib.suppress(Exception):
            await_(driver.rollback())


_LOOP = "convodb.loop"


def _one_loop_per_connection(engine: AsyncEngine, backend: Backend) -> None:
    """Never hand out an asyncpg connection on an event loop other than the one it was made on.

    asyncpg connections belong to their loop: after ``asyncio.run`` has returned, the pool's
    connections are unusable on the next loop. A checkout on another loop gives the
    connection up (the socket goes with the garbage collector: its loop is gone) and opens a
    new one. aiosqlite connections answer on any loop and need none of this.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _remember_loop(_dbapi_connection: Any, record: Any) -> None:
        record.info[_LOOP] = backend.engine_loop = asyncio.get_running_loop()

    @event.listens_for(engine.sync_engine, "checkout")
    def _same_loop(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if record.info.get(_LOOP) is not asyncio.get_running_loop():
            with contextlib.suppress(Exception):  # marks it closed; its loop cannot close it
                dbapi_connection.driver_connection.terminate()
            raise DisconnectionError("the connection belongs to another event loop")


# SQLSTATE classes and codes (PostgreSQL appendix A)
_PG_BUSY = {"40001", "40P01", "55P03", "57014"}  # serialization, deadlock, lock, cancelled
# connection, invalid authorization, invalid catalog name (no such database), resources,
# operator intervention
_PG_UNAVAILABLE_CLASSES = {"08", "28", "3D", "53", "57"}


def _connect_failure(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate:
        return f"the database refused the connection (SQLSTATE {sqlstate})"
    sqlite_name = getattr(orig, "sqlite_errorname", None)
    if sqlite_name:
        return f"the database file cannot be opened ({sqlite_name}: {orig})"
    if isinstance(orig, TimeoutError):
        return "the database did not answer the connection attempt in time"
    return f"the database cannot be reached ({type(orig).__name__})"


def translate_error(exc: BaseException) -> ConvodbError | None:
    """The convodb error a driver error stands for, or ``None`` if it is a bug to surface."""
    if isinstance(exc, ConvodbError):  # ConversationNotFoundError is an OSError (PermissionError)
        return None
    if isinstance(exc, PoolTimeoutError):  # every pooled connection stayed in use
        return StoreBusyError("no free database connection in time; retry the operation")
    if isinstance(exc, TimeoutError):  # asyncpg's command_timeout: no answer at all
        return StoreUnavailableError("the database did not answer in time")
    if isinstance(exc, OSError):
        return StoreUnavailableError(f"the database cannot be reached: {exc}")
    # Hot paths run on the driver directly (see Backend), so its own errors arrive here too.
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    sqlite_name = getattr(orig, "sqlite_errorname", None)
    if sqlite_name is not None:
        if sqlite_name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return StoreBusyError(f"the database is busy ({sqlite_name}); retry the operation")
        if sqlite_name.startswith(("SQLITE_CANTOPEN", "SQLITE_FULL", "SQLITE_READONLY")):
            return StoreUnavailableError(f"the database file cannot be written ({sqlite_name})")
        return None
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate:
        if sqlstate in _PG_BUSY:
            return StoreBusyError(
                f"the database is busy (SQLSTATE {sqlstate}); retry the operation"
            )
        if sqlstate[:2] in _PG_UNAVAILABLE_CLASSES:
            return StoreUnavailableError(f"the database is unavailable (SQLSTATE {sqlstate})")
        return None
    invalidated = isinstance(exc, DBAPIError) and exc.connection_invalidated
    if invalidated or isinstance(orig, OSError):
        return StoreUnavailableError(f"the database connection was lost: {orig}")
    return None


# -- hot-path execution ----------------------------------------------------------------------
#
# The append and the history reads are most of a chat backend's database time, and through
# the SQLAlchemy session each statement cost more than the query itself: the aiosqlite adapter
# makes four thread hops per statement (cursor, execute, fetchall, close) where one does, and
# on asyncpg an append was BEGIN, UPDATE, INSERT, COMMIT where one statement does. So a Backend
# runs these few statements on a driver connection: the SQL is compiled by SQLAlchemy from the
# Core statements in convodb._statements and values go through the column types' own
# processors. The one exception is PostgreSQL's single-statement append, written here as SQL
# (_PG_APPEND); tests append through it and read every column back. Driver statements bypass
# SQLAlchemy's execution events.
#
# "own" means the service owns the transaction (commit mode, session not in a transaction):
# then the statements run on a connection of their own, outside the session, and commit there;
# the session is left untouched. That connection is one of the Database's driver connections
# (convodb._drivers) when it has them, else one checked out of the engine's pool. Otherwise
# they run in the session's transaction.


class Backend:
    """How one database runs the hot path. One instance per engine (see ``backend_for``)."""

    name = ""
    upgrades_on_open = False
    """A schema behind the code's is migrated on first use (else: SchemaVersionError)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._compiled: dict[int, _Compiled] = {}
        self.connections: DriverConnections | None = None
        """The hot path's own driver connections, set by ``Database``; ``None``: the engine's."""
        self.engine_loop: asyncio.AbstractEventLoop | None = None
        """The event loop of the engine's newest connection, where that matters (asyncpg)."""

    @property
    def schema_checked(self) -> bool:
        """Whether the schema version need not be checked (again) before the next use."""
        return id(self) not in _unchecked

    def insert_ignoring_conflicts(self, table: Table) -> Insert:
        """``INSERT ... ON CONFLICT DO NOTHING`` in the dialect's spelling."""
        raise NotImplementedError

    async def rows(
        self, session: AsyncSession, statement: Select[Any], params: dict[str, Any], *, own: bool
    ) -> list[Sequence[Any]]:
        """The rows of a Core SELECT, decoded as the session would decode them.

        Args:
            own: the service owns the transaction; the read may run outside the session.
        """
        result = await session.execute(statement, params)
        return list(result)

    async def append(
        self,
        session: AsyncSession,
        owner: dict[str, Any],
        rows: list[dict[str, Any]],
        *,
        own: bool,
        attachments: Sequence[dict[str, Any]] = (),
    ) -> int | None:
        """Reserve ``len(rows)`` seqs in the conversation and insert the rows, atomically.

        Args:
            owner: ``cid``, ``uid`` and ``now``: the conversation, its owner, the time.
            rows: the messages' column values, without ``seq``.
            own: the service owns the transaction: commit it here; otherwise the rows join
                the session's transaction.
            attachments: rows of the attachments table the messages' parts refer to, each
                digest once; a digest the conversation holds already is left as it is.

        Returns:
            The conversation's new ``last_seq``, or ``None`` when it is missing or not the
            user's (nothing is written then).
        """
        result = await session.execute(statements.BUMP_SEQ, {**owner, "n": len(rows)})
        last_seq = result.scalar_one_or_none()
        if last_seq is None:
            return None
        first = int(last_seq) - len(rows) + 1
        numbered = [{**row, "seq": first + i} for i, row in enumerate(rows)]
        await session.execute(statements.INSERT_MESSAGES, numbered)
        if attachments:
            await session.execute(self.insert_attachments, list(attachments))
        return int(last_seq)

    @functools.cached_property
    def insert_attachments(self) -> Insert:
        """Insert attachments, skipping digests the conversation holds already."""
        return self.insert_ignoring_conflicts(statements.attachments)

    def _compile(self, statement: Any) -> _Compiled:
        cached = self._compiled.get(id(statement))
        if cached is None:
            cached = self._compiled[id(statement)] = _Compiled(statement, self.dialect)
        return cached


class _Compiled:
    """A Core statement compiled for one dialect, ready to run on its driver."""

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.names = tuple(compiled.positiontup or ())
        # Values fixed in the statement itself, e.g. the 1 of EXISTS (SELECT 1 ...).
        self.fixed = {k: b.value for k, b in compiled.binds.items() if not b.required}
        columns = getattr(statement, "selected_columns", ())
        processors = [_result_processor(c.type, dialect) for c in columns]
        self.decoders = [(i, p) for i, p in enumerate(processors) if p is not None]
        # The parameters' types' bind processors, for statements run with many rows (INSERT).
        binders = [_bind_processor(compiled.binds[name].type, dialect) for name in self.names]
        self.binders = [(i, b) for i, b in enumerate(binders) if b is not None]

    def many_args(self, rows: Iterable[dict[str, Any]]) -> list[list[Any]]:
        """Positional, bound values for ``executemany``. A value shared by every row (the
        batch's timestamp) is bound once."""
        names, binders = self.names, self.binders
        out: list[list[Any]] = []
        seen: dict[tuple[int, int], Any] = {}
        for row in rows:
            values = [row.get(name) for name in names]
            for i, bind in binders:
                value = values[i]
                if value is not None:
                    key = (i, id(value))
                    if key not in seen:
                        seen[key] = bind(value)
                    values[i] = seen[key]
            out.append(values)
        return out

    def args(self, params: dict[str, Any]) -> list[Any]:
        """Positional, bound values for one execution."""
        merged = {**self.fixed, **params}
        values = [merged[name] for name in self.names]
        for i, bind in self.binders:
            if values[i] is not None:
                values[i] = bind(values[i])
        return values

    def decode(self, rows: Iterable[Sequence[Any]]) -> list[Sequence[Any]]:
        if not self.decoders:
            return list(rows)
        decoded: list[Sequence[Any]] = []
        for row in rows:
            values = list(row)
            for i, decoder in self.decoders:
                if values[i] is not None:
                    values[i] = decoder(values[i])
            decoded.append(values)
        return decoded


def _bind_processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """The type's own bind processor; for SQLite JSON, one that knows ``{}``."""
    processor: Callable[[Any], Any] | None = type_.dialect_impl(dialect).bind_processor(dialect)
    if processor is None or dialect.name != "sqlite" or not isinstance(type_, JSON):
        return processor
    serialize = processor

    def process(value: Any) -> Any:
        return "{}" if value == {} else serialize(value)

    return process


def _result_processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """The column type's own result processor; for SQLite JSON, one that knows ``{}``."""
    processor: Callable[[Any], Any] | None = type_.dialect_impl(dialect).result_processor(
        dialect, None
    )
    if processor is None or dialect.name != "sqlite" or not isinstance(type_, JSON):
        return processor
    parse = processor

    def process(value: Any) -> Any:
        # Most metadata is empty: skip the parser for it (a new dict each time: it's mutable).
        return {} if value == "{}" else parse(value)

    return process


class SQLiteBackend(Backend):
    """aiosqlite: one thread hop per statement on the driver.

    The ``sqlite3`` module opens a transaction before the first write on its connection, so in
    the session's connection a driver write joins the session's transaction; on a connection of
    its own the append commits (or rolls back) itself.
    """

    name = "sqlite"
    upgrades_on_open = True  # the embedded default: nobody else is there to run the upgrade

    def insert_ignoring_conflicts(self, table: Table) -> Insert:
        return sqlite.insert(table).on_conflict_do_nothing()

    async def rows(
        self, session: AsyncSession, statement: Select[Any], params: dict[str, Any], *, own: bool
    ) -> list[Sequence[Any]]:
        compiled = self._compile(statement)
        sql, args = compiled.sql, compiled.args(params)
        if own and isinstance(self.connections, SqliteThreads):
            return await self.connections.read(
                lambda connection: compiled.decode(connection.execute(sql, args).fetchall())
            )
        async with _driver(session, own=own) as driver:
            return compiled.decode(await driver.execute_fetchall(sql, args))

    async def append(
        self,
        session: AsyncSession,
        owner: dict[str, Any],
        rows: list[dict[str, Any]],
        *,
        own: bool,
        attachments: Sequence[dict[str, Any]] = (),
    ) -> int | None:
        bump, insert = self._compile(statements.BUMP_SEQ), self._compile(statements.INSERT_MESSAGES)
        attach = self._compile(self.insert_attachments)
        attach_args = attach.many_args(attachments) if attachments else None
        if own and isinstance(self.connections, SqliteThreads):
            bump_args = bump.args({**owner, "n": len(rows)})

            def append(connection: sqlite3.Connection) -> int | None:
                # One thread hop for the whole transaction. BEGIN IMMEDIATE takes the write
                # lock first (waiting up to the busy timeout for other processes).
                connection.execute("BEGIN IMMEDIATE")
                bumped = connection.execute(bump.sql, bump_args).fetchall()
                if not bumped:
                    connection.rollback()
                    return None
                last_seq = int(bumped[0][0])
                connection.executemany(insert.sql, self._insert_args(insert, rows, last_seq))
                if attach_args:
                    connection.executemany(attach.sql, attach_args)
                connection.commit()
                return last_seq

            return await self.connections.write(append)
        async with _driver(session, own=own) as driver:
            try:
                bumped = await driver.execute_fetchall(
                    bump.sql, bump.args({**owner, "n": len(rows)})
                )
                last_seq = int(next(iter(bumped))[0]) if bumped else None
                if last_seq is not None:
                    await driver.executemany(insert.sql, self._insert_args(insert, rows, last_seq))
                    if attach_args:
                        await driver.executemany(attach.sql, attach_args)
                if own:
                    await (driver.commit() if last_seq is not None else driver.rollback())
            except BaseException:
                if own:
                    await driver.rollback()
                raise
        return last_seq

    def _insert_args(
        self, insert: _Compiled, rows: list[dict[str, Any]], last_seq: int
    ) -> list[list[Any]]:
        first = last_seq - len(rows) + 1
        return insert.many_args({**row, "seq": first + i} for i, row in enumerate(rows))


class PostgresBackend(Backend):
    """asyncpg: a statement the service owns runs on a connection of its own, in autocommit.

    An append is then one data-modifying statement (the ``UPDATE ... RETURNING`` that reserves
    the seqs and proves ownership, feeding the ``INSERT``): atomic by itself, one round trip,
    and the conversation's row lock is held for that statement only. Inside a transaction the
    caller owns, the session runs the statements, in that transaction. (asyncpg runs only
    what it is sent: the session's connection may not have sent its BEGIN yet, so a driver
    statement on it could escape the caller's transaction.)
    """

    name = "postgresql"

    def insert_ignoring_conflicts(self, table: Table) -> Insert:
        return postgresql.insert(table).on_conflict_do_nothing()

    async def rows(
        self, session: AsyncSession, statement: Select[Any], params: dict[str, Any], *, own: bool
    ) -> list[Sequence[Any]]:
        if not own:
            return await super().rows(session, statement, params, own=own)
        compiled = self._compile(statement)
        async with self._own_connection(session) as driver:
            return compiled.decode(await driver.fetch(compiled.sql, *compiled.args(params)))

    async def append(
        self,
        session: AsyncSession,
        owner: dict[str, Any],
        rows: list[dict[str, Any]],
        *,
        own: bool,
        attachments: Sequence[dict[str, Any]] = (),
    ) -> int | None:
        if not own:
            return await super().append(session, owner, rows, own=own, attachments=attachments)
        names: tuple[str, ...]
        if attachments:
            statement, names = _PG_APPEND_ATTACHMENTS, _PG_ARRAY_COLUMNS
        elif all(_plain(row) for row in rows):  # most chat turns: send 4 arrays, not 10
            statement, names = _PG_APPEND_PLAIN, _PG_PLAIN_COLUMNS
        else:
            statement, names = _PG_APPEND, _PG_ARRAY_COLUMNS
        columns = [[row[name] for row in rows] for name in names]
        for i, name in enumerate(names):
            if name in _PG_JSON_COLUMNS:
                columns[i] = [_json_text(v) for v in columns[i]]
        if attachments:
            columns += [[a[name] for a in attachments] for name in _PG_ATTACHMENT_COLUMNS]
        async with self._own_connection(session) as driver:
            last_seq = await driver.fetchval(
                statement, owner["cid"], owner["uid"], len(rows), owner["now"], *columns
            )
        return None if last_seq is None else int(last_seq)

    def _own_connection(self, session: AsyncSession) -> AbstractAsyncContextManager[Any]:
        if isinstance(self.connections, PgConnections):
            return self.connections.connection()
        return _driver(session, own=True)


def _plain(row: dict[str, Any]) -> bool:
    """Text content without tool call, tool field, key or metadata: the columns
    _PG_APPEND_PLAIN leaves out."""
    return (
        row["parts"] is None
        and row["tool_calls"] is None
        and row["tool_name"] is None
        and row["tool_call_id"] is None
        and row["key"] is None
        and row["metadata"] == {}
    )


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    return "{}" if value == {} else json.dumps(value)  # most metadata is empty


# The messages columns of _PG_APPEND's arrays, in its order ($5 ...); a test appends through it
# on PostgreSQL and reads every column back, so a schema change cannot silently miss it.
_PG_ARRAY_COLUMNS = (
    "id",
    "role",
    "content",
    "parts",
    "tool_calls",
    "tool_name",
    "tool_call_id",
    "metadata",
    "key",
    "token_count",
)
_PG_JSON_COLUMNS = ("parts", "tool_calls", "metadata")
# $1 cid, $2 uid, $3 n, $4 now, then one array per column of _PG_ARRAY_COLUMNS.
_PG_APPEND = """
WITH c AS (
    UPDATE conversations SET last_seq = last_seq + $3, updated_at = $4
    WHERE id = $1 AND user_id = $2
    RETURNING last_seq
), ins AS (
    INSERT INTO messages (conversation_id, seq, id, role, content, parts, tool_calls, tool_name,
                          tool_call_id, metadata, key, token_count, created_at)
    SELECT $1, c.last_seq - $3 + v.ord, v.id, v.role, v.content, v.parts::jsonb,
           v.tool_calls::jsonb, v.tool_name, v.tool_call_id, v.metadata::jsonb, v.key,
           v.token_count, $4
    FROM c, unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                   $11::text[], $12::text[], $13::text[], $14::int[])
            WITH ORDINALITY AS v(id, role, content, parts, tool_calls, tool_name, tool_call_id,
                                 metadata, key, token_count, ord)
)
SELECT last_seq FROM c
"""
# The attachments columns of _PG_APPEND_ATTACHMENTS's last arrays, in its order ($15 ...).
_PG_ATTACHMENT_COLUMNS = ("sha256", "media_type", "size", "data")
# _PG_APPEND that also stores the messages' attachments, in the same statement: only when
# the conversation is the user's (FROM c), each digest once per conversation.
_PG_APPEND_ATTACHMENTS = _PG_APPEND.replace(
    "\nSELECT last_seq FROM c",
    """, att AS (
    INSERT INTO attachments (conversation_id, sha256, media_type, size, data, created_at)
    SELECT $1, a.sha256, a.media_type, a.size, a.data, $4
    FROM c, unnest($15::text[], $16::text[], $17::bigint[], $18::bytea[])
            AS a(sha256, media_type, size, data)
    ON CONFLICT DO NOTHING
)
SELECT last_seq FROM c""",
)
# The same for a batch of plain messages (see _plain): the other columns keep their defaults
# (NULL) and metadata is the empty object. Store tests append plain batches on PostgreSQL and
# read every column back.
_PG_PLAIN_COLUMNS = ("id", "role", "content", "token_count")
_PG_APPEND_PLAIN = """
WITH c AS (
    UPDATE conversations SET last_seq = last_seq + $3, updated_at = $4
    WHERE id = $1 AND user_id = $2
    RETURNING last_seq
), ins AS (
    INSERT INTO messages (conversation_id, seq, id, role, content, metadata, token_count,
                          created_at)
    SELECT $1, c.last_seq - $3 + v.ord, v.id, v.role, v.content, '{}'::jsonb, v.token_count, $4
    FROM c, unnest($5::text[], $6::text[], $7::text[], $8::int[])
            WITH ORDINALITY AS v(id, role, content, token_count, ord)
)
SELECT last_seq FROM c
"""


@asynccontextmanager
async def _driver(session: AsyncSession, *, own: bool) -> AsyncIterator[Any]:
    """A driver connection: a pooled one of its own when ``own``, else the session's."""
    if not own:
        connection = await session.connection()
        yield (await connection.get_raw_connection()).driver_connection
        return
    engine = session.bind
    assert isinstance(engine, AsyncEngine), "the service owns transactions on engine sessions only"
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        try:
            yield raw.driver_connection
        except BaseException as exc:
            if isinstance(translate_error(exc), StoreUnavailableError):
                await connection.invalidate()  # never hand a broken connection to the next caller
            raise


_BACKENDS: dict[str, type[Backend]] = {"sqlite": SQLiteBackend, "postgresql": PostgresBackend}
# The Backend of each engine (the sync Engine behind an AsyncEngine), gone with it: a Backend
# holds the dialect and its driver connections, never the engine.
_backends: weakref.WeakKeyDictionary[Engine, Backend] = weakref.WeakKeyDictionary()


# The Backends of Databases whose schema version is still to be checked (see convodb._db), by
# id, each gone with its Backend. While it is empty, which is always but for a Database's
# first use, the check costs every service call one test of a dict (a WeakSet's costs a
# method call, ~0.15 us).
_unchecked: dict[int, weakref.ref[Backend]] = {}


def register_backend(engine: AsyncEngine, connections: DriverConnections | None) -> Backend:
    """Make the Backend of ``engine``, with the hot path's own driver connections; its
    schema version is to be checked on first use."""
    backend = _backends[engine.sync_engine] = _backend_class(engine.dialect)(engine.dialect)
    backend.connections = connections
    set_schema_checked(backend, False)
    return backend


def unchecked_backend(session: AsyncSession) -> Backend | None:
    """The session's Backend if its database's schema version is still to be checked.

    Only engines made by a ``Database`` are checked; an engine of the caller's own is the
    caller's to keep at the head revision.
    """
    if not _unchecked:
        return None
    backend = backend_for(session)
    return None if backend.schema_checked else backend


def set_schema_checked(backend: Backend, checked: bool) -> None:
    """Record that the schema was found at the head revision (or must be checked again)."""
    key = id(backend)
    if checked:
        _unchecked.pop(key, None)
    elif key not in _unchecked:
        # The callback runs when the Backend is collected, before its id can be reused.
        _unchecked[key] = weakref.ref(backend, lambda _ref: _unchecked.pop(key, None))


def backend_for(session: AsyncSession) -> Backend:
    """The Backend for the session's database (one without driver connections when the
    session's engine was not made by a ``Database``)."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    backend = _backends.get(engine)
    if backend is None:
        backend = _backends[engine] = _backend_class(engine.dialect)(engine.dialect)
    return backend


def _backend_class(dialect: Dialect) -> type[Backend]:
    if dialect.name not in _BACKENDS:
        raise NotImplementedError(f"convodb does not support the {dialect.name!r} dialect")
    return _BACKENDS[dialect.name]
