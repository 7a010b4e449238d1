"""PostgreSQL: asyncpg for the engine, and a small pool of convodb's own (``_pool``) for the
hot path.

An append the service owns is one statement (:data:`APPEND`): the ``UPDATE ... RETURNING``
that reserves the seqs and proves ownership feeds the ``INSERT`` of the messages (and of their
attachments), atomic by itself, one round trip, the conversation's row lock held for that
statement only. Errors are classified by SQLSTATE.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import Select, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql.dml import Insert

from ..errors import ConvodbError, StoreBusyError, StoreUnavailableError
from ._base import Backend, DriverConnections, Row, Timeouts, driver, one_loop_per_connection
from ._pool import DriverPool

__all__ = ["APPEND", "ARRAY_COLUMNS", "PgConnections", "PostgresBackend"]

# SQLSTATE classes and codes (PostgreSQL appendix A)
_BUSY = {"40001", "40P01", "55P03", "57014"}  # serialization, deadlock, lock, cancelled
# connection, invalid authorization, invalid catalog name (no such database), resources,
# operator intervention
_UNAVAILABLE_CLASSES = {"08", "28", "3D", "53", "57"}


def server_settings(timeouts: Timeouts) -> dict[str, str]:
    """Session settings that apply ``timeouts`` on the server."""
    if timeouts.statement is None:
        return {}
    return {"statement_timeout": str(max(1, round(timeouts.statement * 1000)))}


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
    schemes = ("postgresql", "postgres")  # postgres://: Heroku-style URLs
    driver_name = "asyncpg"
    extra = "postgres"
    has_driver_connections = True

    @classmethod
    def engine_options(cls, url: URL, *, pool_size: int, timeouts: Timeouts) -> dict[str, Any]:
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
                "server_settings": server_settings(timeouts),
            },
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
        kwargs = {**kwargs, **connect_args}
        cache_size = kwargs.pop("prepared_statement_cache_size", None)
        kwargs.pop("prepared_statement_name_func", None)
        for name in ("timeout", "command_timeout"):  # the pool applies them, from timeouts
            kwargs.pop(name, None)
        if cache_size is not None:
            kwargs["statement_cache_size"] = cache_size
        return PgConnections(kwargs, max_size=max_size, timeouts=timeouts)

    def configure(self, engine: AsyncEngine, timeouts: Timeouts | None = None) -> None:
        super().configure(engine, timeouts)
        one_loop_per_connection(engine, self)

    @classmethod
    def classify(cls, error: BaseException) -> ConvodbError | None:
        sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if not sqlstate:
            return None
        if sqlstate in _BUSY:
            return StoreBusyError(
                f"the database is busy (SQLSTATE {sqlstate}); retry the operation"
            )
        if sqlstate[:2] in _UNAVAILABLE_CLASSES:
            return StoreUnavailableError(f"the database is unavailable (SQLSTATE {sqlstate})")
        return None

    @classmethod
    def connect_failure(cls, error: BaseException) -> str:
        orig = getattr(error, "orig", None) or error
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if sqlstate:
            return f"the database refused the connection (SQLSTATE {sqlstate})"
        return super().connect_failure(error)

    def insert_ignoring_conflicts(self, table: Table) -> Insert:
        return postgresql.insert(table).on_conflict_do_nothing()

    def migration_transaction(
        self, connection: Connection
    ) -> contextlib.AbstractContextManager[Any]:
        return _migration_transaction(connection)

    table_sizes_sql = (
        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class AS c "
        "WHERE c.relkind = 'r' AND c.relname IN :names "
        "AND c.relnamespace = to_regnamespace(current_schema())"
    )

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
        async with self._own_connection(session) as driver:
            rows = await driver.fetch(compiled.sql, *compiled.args(params))
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
        if not own:
            return await super().append(session, owner, rows, own=own, attachments=attachments)
        names: tuple[str, ...]
        if attachments:
            form, names = _APPEND_ATTACHMENTS, ARRAY_COLUMNS
        elif all(_plain(row) for row in rows):  # most chat turns: send 4 arrays, not 10
            form, names = _APPEND_PLAIN, PLAIN_COLUMNS
        else:
            form, names = _APPEND, ARRAY_COLUMNS
        key = owner.get("key")
        statement = form[key is not None]
        columns = [[row[name] for row in rows] for name in names]
        for i, name in enumerate(names):
            if name in _JSON_COLUMNS:
                columns[i] = [_json_text(v) for v in columns[i]]
        if attachments:
            columns += [[a[name] for a in attachments] for name in ATTACHMENT_COLUMNS]
        async with self._own_connection(session) as driver:
            args = [owner["cid"], owner["uid"], len(rows), owner["now"], *columns]
            if key is not None:
                args.append(key)
            last_seq = await driver.fetchval(statement, *args)
        return None if last_seq is None else int(last_seq)

    def _own_connection(self, session: AsyncSession) -> AbstractAsyncContextManager[Any]:
        if isinstance(self.connections, PgConnections):
            return self.connections.connection()
        return driver(self, session, own=True)


def _plain(row: dict[str, Any]) -> bool:
    """Text content without tool call, tool field, key or metadata: the columns
    APPEND_PLAIN leaves out."""
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


# The messages columns of APPEND's arrays, in its order ($5 ...); a test appends through it
# on PostgreSQL and reads every column back, so a schema change cannot silently miss it.
ARRAY_COLUMNS = (
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
_JSON_COLUMNS = ("parts", "tool_calls", "metadata")
# $1 cid, $2 uid, $3 n, $4 now, then one array per column of ARRAY_COLUMNS.
APPEND = """
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
# The attachments columns of APPEND_ATTACHMENTS's last arrays, in its order ($15 ...).
ATTACHMENT_COLUMNS = ("sha256", "media_type", "size", "data")
# APPEND that also stores the messages' attachments, in the same statement: only when
# the conversation is the user's (FROM c), each digest once per conversation.
APPEND_ATTACHMENTS = APPEND.replace(
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
PLAIN_COLUMNS = ("id", "role", "content", "token_count")
APPEND_PLAIN = """
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


def _keyed(statement: str, parameters: int) -> tuple[str, str]:
    """``statement`` and its keyed form, whose ownership check also requires the caller's
    API key (its last parameter, after the ``parameters`` others) to be live."""
    owned = "WHERE id = $1 AND user_id = $2\n"
    assert statement.count(owned) == 1
    check = f"SELECT 1 FROM api_keys WHERE id = ${parameters + 1} AND revoked_at IS NULL"
    return statement, statement.replace(owned, f"{owned[:-1]} AND EXISTS ({check})\n")


# Each statement, indexed by whether the append is keyed (Backend.append's owner["key"]).
_APPEND = _keyed(APPEND, 4 + len(ARRAY_COLUMNS))
_APPEND_ATTACHMENTS = _keyed(APPEND_ATTACHMENTS, 4 + len(ARRAY_COLUMNS) + len(ATTACHMENT_COLUMNS))
_APPEND_PLAIN = _keyed(APPEND_PLAIN, 4 + len(PLAIN_COLUMNS))


class PgConnections(DriverPool):
    """The hot path's asyncpg connections (see ``_pool``), in autocommit.

    Every statement runs under asyncpg's ``command_timeout`` and the server's
    ``statement_timeout`` (``Timeouts.statement``).
    """

    def __init__(self, kwargs: dict[str, Any], *, max_size: int, timeouts: Timeouts) -> None:
        super().__init__(max_size=max_size, timeouts=timeouts)
        self._kwargs = {
            **kwargs,
            "timeout": timeouts.connect,
            "command_timeout": timeouts.command,
            "server_settings": {**server_settings(timeouts), **kwargs.get("server_settings", {})},
        }

    async def _open(self) -> Any:
        asyncpg = _asyncpg()
        try:
            connection = await asyncpg.connect(**self._kwargs)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailableError(_connect_failure(exc, self._timeouts)) from exc
        try:
            await _pg_codecs(connection)
        except BaseException:
            connection.terminate()
            raise
        return connection

    def _is_closed(self, connection: Any) -> bool:
        return bool(connection.is_closed())

    def _in_transaction(self, connection: Any) -> bool:
        return bool(connection.is_in_transaction())

    def _terminate(self, connection: Any) -> None:
        connection.terminate()

    async def _close(self, connection: Any) -> None:
        await connection.close()

    def _server_answered(self, exc: BaseException) -> bool:
        """asyncpg raises some errors of its own as ``PostgresError`` subclasses (an argument
        out of range for its type, after the statement was sent): only the server's carry a
        severity."""
        return (
            isinstance(exc, _asyncpg().PostgresError) and exc.as_dict().get("severity") is not None
        )

    def _lost(self, connection: Any, exc: BaseException) -> bool:
        return bool(connection.is_closed()) or isinstance(
            exc, (OSError, _asyncpg().PostgresConnectionError)
        )


def _connect_failure(exc: BaseException, timeouts: Timeouts) -> str:
    if isinstance(exc, TimeoutError):
        return f"the database did not accept a connection within {timeouts.connect:g} s"
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return f"the database refused the connection (SQLSTATE {sqlstate})"
    return f"the database cannot be reached ({type(exc).__name__})"


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


MIGRATION_LOCK_KEY = 0x636F6E766F6462  # "convodb" in ASCII: the advisory lock of migrations


@contextlib.contextmanager
def _migration_transaction(connection: Connection) -> Iterator[None]:
    with connection.begin():
        connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
        # A transaction-scoped advisory lock on a constant key: convodb's migrations.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        yield
