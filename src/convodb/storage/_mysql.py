"""MariaDB 10.11+ (and MySQL 8, untested): asyncmy, for the engine and for a small pool of
convodb's own (``MyConnections``) on the hot path.

Neither database has ``UPDATE ... RETURNING``, so the append reserves its seqs with
``UPDATE conversations SET last_seq = LAST_INSERT_ID(last_seq + n) ... WHERE id = ? AND
user_id = ?``: the server hands the new ``last_seq`` back in the statement's OK packet
(``lastrowid``), no second round trip, and the affected-row count says whether the
conversation is the user's (``LAST_INSERT_ID()`` keeps its old value when no row matched, so
the count, not the id, decides). The row lock it takes orders concurrent appends, as on
PostgreSQL; the messages and their attachments follow in the same transaction, which commits.
Row locks (``lock``) are ``SELECT ... FOR UPDATE``; an update that must return its row runs
the ``UPDATE``, then reads the row by its key, in the same transaction.

Sessions run at READ COMMITTED (each statement sees what committed before it, as on
PostgreSQL), with the lock wait and the statement time bounded by the ``Database``'s
statement timeout (MariaDB's ``max_statement_time``; MySQL bounds its SELECTs only, with
``max_execution_time``). Errors are classified by MySQL error number.

asyncmy rather than aiomysql: compiled wheels, no PyMySQL dependency (whose current releases
break aiomysql), SQLSTATEs on its errors, and a third of aiomysql's latency on a 50-row read
(see ``benchmarks/results``). The hot path runs on connections of convodb's own: through
SQLAlchemy's engine, its async layer, pool and session cost 2-2.6x the statements' own time
(``benchmarks/results/quick-run-mariadb.md`` measures each layer), which design rule 13 asks
for before a pool of our own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, event, select, text
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.mysql.asyncmy import dialect as asyncmy_dialect
from sqlalchemy.engine import URL, Connection, CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.elements import ColumnElement, TextClause

from .. import _statements as statements
from ..errors import ConvodbError, StoreBusyError, StoreUnavailableError
from ._base import Backend, DriverConnections, Row, Timeouts, driver, one_loop_per_connection
from ._pool import DriverPool

__all__ = ["MyConnections", "MySQLBackend"]

# MySQL / MariaDB error numbers (server errors 1xxx, client errors 2xxx).
_DUPLICATE_KEY = 1062
_BUSY = {
    1205,  # lock wait timeout exceeded
    1213,  # deadlock found
    1969,  # MariaDB: query execution was interrupted (max_statement_time exceeded)
    3024,  # MySQL: maximum statement execution time exceeded
    1317,  # query execution was interrupted
}
_UNAVAILABLE = {
    1040,  # too many connections
    1044,  # access denied for user to database
    1045,  # access denied for user
    1049,  # unknown database
    1053,  # server shutdown in progress
    1152,  # aborted connection
    1927,  # connection was killed
    2002,  # can't connect through socket
    2003,  # can't connect to server
    2005,  # unknown host
    2006,  # server has gone away
    2013,  # lost connection during query
    2055,  # lost connection at handshake
}
_DRIVER_MODULES = ("asyncmy", "pymysql")

# Reserve n seqs in an owned conversation; the new last_seq comes back as lastrowid. The
# keyed form also requires the caller's API key to be live (statements.KEY_LIVE).
_BUMP_SQL = (
    "UPDATE conversations SET last_seq = LAST_INSERT_ID(last_seq + :n), updated_at = :now "
    "WHERE id = :cid AND user_id = :uid"
)
_NOW = bindparam("now", type_=statements.conversations.c.updated_at.type)
_BUMP_SEQ = text(_BUMP_SQL).bindparams(_NOW)
_KEYED_BUMP_SEQ = text(
    f"{_BUMP_SQL} AND EXISTS (SELECT 1 FROM api_keys WHERE id = :key AND revoked_at IS NULL)"
).bindparams(_NOW)
_PLAIN_COLUMNS = (
    "conversation_id", "seq", "id", "role", "content", "metadata", "token_count", "created_at",
)  # fmt: skip
_INSERT_PLAIN = statements.messages.insert().values(
    {name: bindparam(name) for name in _PLAIN_COLUMNS}
)
_LOCK = select(statements.conversations.c.last_seq).where(statements.OWNED).with_for_update()
_MIGRATION_LOCK = "convodb_migrations"


class MySQLBackend(Backend):
    """MariaDB and MySQL through asyncmy (``mysql://`` and ``mariadb://`` URLs)."""

    name = "mysql"
    schemes = ("mysql", "mariadb")
    driver_name = "asyncmy"
    extra = "mysql"
    has_driver_connections = True

    @classmethod
    def engine_options(cls, url: URL, *, pool_size: int, timeouts: Timeouts) -> dict[str, Any]:
        return {
            "pool_size": pool_size,
            "max_overflow": 0,
            "pool_timeout": timeouts.pool,
            # Servers close connections idle past wait_timeout (8 h by default): retire them
            # before, and never hand out one idle longer than the idle timeout.
            "pool_recycle": max(1, int(timeouts.idle)),
            "isolation_level": "READ COMMITTED",
            "connect_args": {"connect_timeout": max(1, math.ceil(timeouts.connect))},
        }

    @classmethod
    def finish_engine_options(
        cls, url: URL, options: dict[str, Any], timeouts: Timeouts
    ) -> dict[str, Any]:
        if {"creator", "async_creator"} & set(options):
            return options
        # asyncmy's connect_timeout bounds the TCP connect only: the greeting and the
        # authentication are bounded by Timeouts.connect in a creator of convodb's.
        _, kwargs = asyncmy_dialect().create_connect_args(url)
        kwargs |= options.get("connect_args", {})
        return options | {
            "async_creator": functools.partial(_connect_in_time, kwargs, timeouts.connect)
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
        _, kwargs = engine.dialect.create_connect_args(engine.url)
        return MyConnections({**kwargs, **connect_args}, max_size=max_size, timeouts=timeouts)

    def configure(self, engine: AsyncEngine, timeouts: Timeouts | None = None) -> None:
        super().configure(engine, timeouts)
        one_loop_per_connection(engine, self)
        if timeouts is not None:
            _install_session_settings(engine, timeouts)

    @classmethod
    def session_settings(cls, timeouts: Timeouts, *, mariadb: bool) -> list[str]:
        """Per-connection settings that apply ``timeouts`` on the server."""
        settings = ["SET SESSION time_zone = '+00:00'"]
        if timeouts.statement is not None:
            seconds = max(1, math.ceil(timeouts.statement))
            settings.append(f"SET SESSION innodb_lock_wait_timeout = {seconds}")
            if mariadb:
                settings.append(f"SET SESSION max_statement_time = {timeouts.statement:g}")
            else:
                settings.append(f"SET SESSION max_execution_time = {seconds * 1000}")
        return settings

    @classmethod
    def classify(cls, error: BaseException) -> ConvodbError | None:
        if not type(error).__module__.startswith(_DRIVER_MODULES):
            return None
        code = error.args[0] if error.args and isinstance(error.args[0], int) else None
        if code in _BUSY:
            return StoreBusyError(f"the database is busy (error {code}); retry the operation")
        if code in _UNAVAILABLE or code == 0:  # 0: the driver's "Not connected"
            return StoreUnavailableError(f"the database is unavailable (error {code})")
        return None

    @classmethod
    def connect_failure(cls, error: BaseException) -> str:
        orig = getattr(error, "orig", None) or error
        code = orig.args[0] if orig.args and isinstance(orig.args[0], int) else None
        if code is not None:
            return f"the database refused the connection (error {code})"
        return super().connect_failure(error)

    def insert_ignoring_conflicts(self, table: Table) -> Insert:
        # ON DUPLICATE KEY UPDATE of the key to itself: a no-op on a duplicate, where INSERT
        # IGNORE would also turn other errors (a missing parent row) into warnings.
        first_key = table.primary_key.columns.values()[0]
        return mysql.insert(table).on_duplicate_key_update({first_key.name: first_key})

    # -- the hot path ------------------------------------------------------------------------
    #
    # A read or an append the service owns runs on a connection of convodb's own
    # (MyConnections), not through the session: SQLAlchemy's async execution on asyncmy, its
    # pool and the AsyncSession cost more than the statements' round trips
    # (benchmarks/results). Inside a transaction the caller owns, the session runs them.

    async def rows(
        self,
        session: AsyncSession,
        statement: Select[Any],
        params: dict[str, Any],
        *,
        own: bool,
        into: Row | None = None,
    ) -> list[Any]:
        if not own:
            return await super().rows(session, statement, params, own=own, into=into)
        compiled = self._compile(statement)
        async with self._own_connection(session) as connection, connection.cursor() as cursor:
            await cursor.execute(compiled.sql, compiled.args(params))
            rows = await cursor.fetchall()
            await connection.commit()  # ends the read's transaction: none stays open idle
        return compiled.decode(rows, into)

    async def append(
        self,
        session: AsyncSession,
        owner: dict[str, Any],
        rows: list[dict[str, Any]],
        *,
        own: bool,
        attachments: Sequence[dict[str, Any]] = (),
    ) -> int | None:
        if own and not attachments:  # binary data goes the session's way: rare, and large
            return await self._append_own(session, owner, rows)
        result = cast(
            "CursorResult[Any]", await session.execute(_bump(owner), {**owner, "n": len(rows)})
        )
        if result.rowcount != 1:
            return None
        last_seq = int(result.lastrowid)
        first = last_seq - len(rows) + 1
        numbered = [{**row, "seq": first + i} for i, row in enumerate(rows)]
        await session.execute(statements.INSERT_MESSAGES, numbered)
        if attachments:
            await session.execute(self.insert_attachments, list(attachments))
        return last_seq

    async def _append_own(
        self, session: AsyncSession, owner: dict[str, Any], rows: list[dict[str, Any]]
    ) -> int | None:
        # The transaction is this connection's (autocommit is off): the bump takes the
        # conversation's row lock, the INSERT follows, COMMIT ends both. After an error the
        # transaction is rolled back (MyConnections.connection) or goes with the connection.
        bump = self._compile(_bump(owner))
        # Plain chat turns (most of them) leave out the columns they hold NULL in: MariaDB's
        # bulk insert (one COM_STMT_BULK_EXECUTE) takes no column that is NULL in every row.
        plain = all(_plain(row) for row in rows)
        insert = self._compile(_INSERT_PLAIN if plain else statements.INSERT_MESSAGES)
        async with self._own_connection(session) as connection, connection.cursor() as cursor:
            await cursor.execute(bump.sql, bump.args({**owner, "n": len(rows)}))
            if cursor.rowcount != 1:  # not the user's, or missing: nothing was changed
                await connection.rollback()
                return None
            last_seq = int(cursor.lastrowid)
            first = last_seq - len(rows) + 1
            numbered = ({**row, "seq": first + i} for i, row in enumerate(rows))
            await cursor.executemany(insert.sql, insert.many_args(numbered))
            await connection.commit()
        return last_seq

    def _own_connection(self, session: AsyncSession) -> AbstractAsyncContextManager[Any]:
        if isinstance(self.connections, MyConnections):
            return self.connections.connection()
        return driver(self, session, own=True)

    # -- row locks and writes that return rows -----------------------------------------------

    async def lock(self, session: AsyncSession, cid: str, uid: str) -> int | None:
        result = await session.execute(_LOCK, {"cid": cid, "uid": uid})
        last_seq = result.scalar_one_or_none()
        return None if last_seq is None else int(last_seq)

    async def insert_conversation(
        self, session: AsyncSession, values: dict[str, Any]
    ) -> Sequence[Any] | None:
        try:
            # A duplicate key undoes this statement only; the transaction goes on.
            await session.execute(statements.conversations.insert().values(values))
        except IntegrityError as exc:
            if _errno(exc.orig) == _DUPLICATE_KEY:
                return None
            raise
        found = select(*statements.CONV_COLUMNS).where(
            statements.conversations.c.id == values["id"]
        )
        return (await session.execute(found)).one()

    async def update_returning(
        self,
        session: AsyncSession,
        statement: Update,
        columns: Sequence[Any],
        key: ColumnElement[bool] | None = None,
    ) -> Sequence[Any] | None:
        result = cast("CursorResult[Any]", await session.execute(statement))
        if result.rowcount == 0:
            return None  # (SQLAlchemy counts matched rows, not changed ones, on MySQL)
        where = key if key is not None else statement.whereclause
        assert where is not None, "update_returning updates one row, found by a condition"
        found = select(*columns).select_from(statement.table).where(where)
        return (await session.execute(found)).one()

    # -- migrations --------------------------------------------------------------------------

    def migration_transaction(
        self, connection: Connection
    ) -> contextlib.AbstractContextManager[Any]:
        return _locked_migration(connection)

    # InnoDB's own figures, refreshed by its statistics (approximate between refreshes).
    table_sizes_sql = (
        "SELECT table_name, data_length + index_length FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_name IN :names"
    )


@contextlib.contextmanager
def _locked_migration(connection: Connection) -> Iterator[None]:
    with _quiet_notes():
        yield from _locked(connection)


@contextlib.contextmanager
def _quiet_notes() -> Iterator[None]:
    # asyncmy logs every server note as a warning; Alembic's version table draws one
    # ("Name '..._pkc' ignored for PRIMARY key": MariaDB names every primary key PRIMARY),
    # which is noise to whoever runs the migration.
    driver_log = logging.getLogger("asyncmy")
    level = driver_log.level
    driver_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        driver_log.setLevel(level)


def _locked(connection: Connection) -> Iterator[None]:
    # DDL commits implicitly on MySQL: a named lock, which outlives it, keeps concurrent
    # upgraders (workers starting at once) apart instead of a transaction.
    got = connection.exec_driver_sql(f"SELECT GET_LOCK('{_MIGRATION_LOCK}', 600)").scalar()
    connection.commit()  # ends SQLAlchemy's implicit transaction; the lock is the session's
    if got != 1:
        raise StoreBusyError("another process is migrating the schema; retry the operation")
    try:
        with connection.begin():
            yield
    finally:
        try:
            connection.exec_driver_sql(f"SELECT RELEASE_LOCK('{_MIGRATION_LOCK}')")
            connection.commit()
        except Exception:  # the connection is gone, and the lock with it; keep the first error
            connection.invalidate()


async def _connect_in_time(kwargs: dict[str, Any], seconds: float) -> Any:
    """An asyncmy connection, opened (greeting and authentication included) within
    ``seconds``."""
    import asyncmy

    async with asyncio.timeout(seconds):
        return await asyncmy.connect(**kwargs)


class MyConnections(DriverPool):
    """The hot path's asyncmy connections (see ``_pool``): autocommit off, READ COMMITTED,
    UTC, the statement timeout on the server as the engine's connections have them, and
    asyncmy's statement cache (server-side prepared statements, binary rows, and one
    ``COM_STMT_BULK_EXECUTE`` for an INSERT of many rows on MariaDB)."""

    _STATEMENT_CACHE = 32

    def __init__(self, kwargs: dict[str, Any], *, max_size: int, timeouts: Timeouts) -> None:
        super().__init__(max_size=max_size, timeouts=timeouts)
        self._kwargs = {
            "charset": "utf8mb4",
            **kwargs,
            "autocommit": False,
            "connect_timeout": max(1, math.ceil(timeouts.connect)),
            "stmt_cache_size": self._STATEMENT_CACHE,
        }

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A connection, as ``DriverPool.connection``; the block must finish within the
        command timeout (one timer for the block, not asyncmy's ``read_timeout``, which
        costs a task per packet read). An error the server answered with leaves the
        transaction open (autocommit is off, and asyncmy's transaction flag is not updated by
        an error): it is rolled back here, before the connection goes back."""
        async with super().connection() as connection:
            try:
                async with asyncio.timeout(self._timeouts.command):
                    yield connection
            except Exception as exc:
                if _server_answered(exc):
                    await connection.rollback()  # a failure here: the connection is lost
                raise

    async def _open(self) -> Any:
        import asyncmy

        # connect_timeout covers asyncmy's TCP connect only: the whole set-up (greeting,
        # authentication, session settings) is bounded here by Timeouts.connect.
        connection = None
        try:
            async with asyncio.timeout(self._timeouts.connect):
                connection = await asyncmy.connect(**self._kwargs)
                async with connection.cursor() as cursor:
                    mariadb = "mariadb" in connection.get_server_info().lower()
                    await cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    for setting in MySQLBackend.session_settings(self._timeouts, mariadb=mariadb):
                        await cursor.execute(setting)
        except (OSError, asyncmy.errors.Error) as exc:
            if connection is not None:
                connection.close()
            if isinstance(exc, TimeoutError):
                why = f"no answer within {self._timeouts.connect:g} s"
            else:
                code = _errno(exc)
                why = f"error {code}" if code else type(exc).__name__
            raise StoreUnavailableError(f"the database cannot be reached ({why})") from exc
        except BaseException:
            if connection is not None:
                connection.close()
            raise
        return connection

    def _is_closed(self, connection: Any) -> bool:
        return not connection.connected

    def _in_transaction(self, connection: Any) -> bool:
        return bool(connection.get_transaction_status())

    def _terminate(self, connection: Any) -> None:
        connection.close()

    async def _close(self, connection: Any) -> None:
        await connection.ensure_closed()

    def _server_answered(self, exc: BaseException) -> bool:
        return _server_answered(exc)

    def _lost(self, connection: Any, exc: BaseException) -> bool:
        code = _errno(exc) if type(exc).__module__.startswith(_DRIVER_MODULES) else None
        return not connection.connected or isinstance(exc, OSError) or 2000 <= (code or 0) < 3000


def _bump(owner: dict[str, Any]) -> TextClause:
    return _KEYED_BUMP_SEQ if "key" in owner else _BUMP_SEQ


def _plain(row: dict[str, Any]) -> bool:
    """Text content without parts, tool call, tool field or key: what _INSERT_PLAIN holds."""
    return (
        row["parts"] is None
        and row["tool_calls"] is None
        and row["tool_name"] is None
        and row["tool_call_id"] is None
        and row["key"] is None
        and row["content"] is not None
    )


def _server_answered(error: BaseException) -> bool:
    """Whether the error is the server's answer to a statement: server errors are numbered
    1000-1999 and 3000 up (MySQL 8, MariaDB); 2000-2999 are the client's own, such as a
    lost connection."""
    code = _errno(error) if type(error).__module__.startswith(_DRIVER_MODULES) else None
    return code is not None and code >= 1000 and not 2000 <= code < 3000


def _errno(error: BaseException | None) -> int | None:
    if error is None or not error.args or not isinstance(error.args[0], int):
        return None
    return error.args[0]


def _install_session_settings(engine: AsyncEngine, timeouts: Timeouts) -> None:
    """Apply the timeouts to each new connection of ``engine`` (see :meth:`session_settings`)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _settings(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT VERSION()")
            mariadb = "mariadb" in str(cursor.fetchone()[0]).lower()
            for setting in MySQLBackend.session_settings(timeouts, mariadb=mariadb):
                cursor.execute(setting)
        finally:
            cursor.close()
