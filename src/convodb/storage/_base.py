"""The storage interface: what one database must provide, and what all of them share.

A database is one module of this package with a :class:`Backend` subclass (see
``convodb.storage`` for the list and how to add one). The service calls the methods of the
session's Backend and never asks which database it runs on:

- **set-up**: :meth:`Backend.engine_options` (pool, timeouts, driver arguments),
  :meth:`Backend.configure` (per-connection set-up, connect-error translation),
  :meth:`Backend.driver_connections` (the hot path's own connections, or none);
- **the hot path**: :meth:`Backend.rows` (a Core SELECT, decoded as the session would) and
  :meth:`Backend.append` (reserve seqs and insert, atomically, ownership proved by the same
  statement or transaction);
- **row locks and writes that return rows**: :meth:`Backend.lock`,
  :meth:`Backend.insert_conversation`, :meth:`Backend.update_returning`,
  :meth:`Backend.insert_ignoring_conflicts`; the defaults use ``RETURNING`` and ``ON
  CONFLICT``, which a database without them overrides;
- **errors**: :meth:`Backend.classify` maps the driver's own errors to "busy, retry" or
  "unavailable", by error code (SQLSTATE, SQLite error name, MySQL errno), never by message;
- **migrations**: :meth:`Backend.migration_transaction`, how a migration run excludes another.

What every database shares lives here too: compiling Core statements once per dialect and
running them on the bare driver (:class:`Compiled`), the timeouts, and the translation of
errors that are the same everywhere (pool timeouts, lost connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from sqlalchemy import JSON, Select, Table, bindparam, event, text
from sqlalchemy.engine import URL, Connection, Dialect
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.elements import ColumnElement

from .. import _statements as statements
from ..errors import ConvodbError, StoreBusyError, StoreUnavailableError

__all__ = [
    "Backend",
    "Compiled",
    "DriverConnections",
    "Timeouts",
    "bump_seq",
    "driver",
    "engine_budget",
    "one_loop_per_connection",
    "set_schema_checked",
    "translate_error",
]

Row = Callable[[Sequence[Any]], Any]
"""What makes a decoded row into the record a read returns (``Backend.rows(into=...)``)."""


class DriverConnections(Protocol):
    """The hot path's own connections of a ``Database``, beside its engine."""

    on_connect: list[Callable[[Any], None]]
    """Called with each new driver connection (tests trace statements so)."""

    async def close(self) -> None:
        """Close them; later use opens new ones."""
        ...


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

    @property
    def command(self) -> float | None:
        """A client-side statement timeout: the server's, plus time for its answer."""
        return None if self.statement is None else self.statement + _ANSWER_GRACE


_ANSWER_GRACE = 1.0


def bump_seq(owner: dict[str, Any]) -> Update:
    """The ``UPDATE ... RETURNING last_seq`` that reserves an append's seqs for ``owner``
    (see :meth:`Backend.append`): with the key check when ``owner`` carries a ``key``."""
    return statements.keyed(statements.BUMP_SEQ) if "key" in owner else statements.BUMP_SEQ


def engine_budget(max_connections: int) -> tuple[int, int]:
    """How ``max_connections`` splits: ``(engine pool, hot-path pool)``.

    The hot path (appends, reads, key lookups) gets most; the engine's pool serves the rest
    (creating, listing, updating conversations, keyed appends, a caller's own transactions).
    """
    if not isinstance(max_connections, int) or max_connections < 2:
        raise ValueError(f"max_connections must be an integer >= 2; got {max_connections!r}")
    engine = max(1, max_connections // 4)
    return engine, max_connections - engine


# -- hot-path execution ----------------------------------------------------------------------
#
# The append and the history reads are most of a chat backend's database time, and through
# the SQLAlchemy session each statement cost more than the query itself: the aiosqlite adapter
# makes four thread hops per statement (cursor, execute, fetchall, close) where one does, and
# on asyncpg an append was BEGIN, UPDATE, INSERT, COMMIT where one statement does. So a Backend
# runs these few statements on a driver connection: the SQL is compiled by SQLAlchemy from the
# Core statements in convodb._statements and values go through the column types' own
# processors. The exceptions are appends written as SQL where a database does it in one
# statement (PostgreSQL's); tests append through them and read every column back. Driver
# statements bypass SQLAlchemy's execution events.
#
# "own" means the service owns the transaction (commit mode, session not in a transaction):
# then the statements run on a connection of their own, outside the session, and commit there;
# the session is left untouched. That connection is one of the Database's driver connections
# (Backend.driver_connections) when it has them, else one checked out of the engine's pool.
# Otherwise
# they run in the session's transaction.


class Backend:
    """How one database stores and reads. One instance per engine (``convodb.storage``)."""

    name: ClassVar[str] = ""
    """SQLAlchemy's dialect name, e.g. ``"postgresql"``."""
    schemes: ClassVar[tuple[str, ...]] = ()
    """URL schemes users write for it (``postgresql://``, ``postgres://``)."""
    driver_name: ClassVar[str] = ""
    """The async driver's SQLAlchemy name and import name, e.g. ``"asyncpg"``."""
    extra: ClassVar[str | None] = None
    """The package extra that installs the driver; ``None``: a core dependency."""
    upgrades_on_open: ClassVar[bool] = False
    """A schema behind the code's is migrated on first use (else: SchemaVersionError)."""
    has_driver_connections: ClassVar[bool] = False
    """Whether :meth:`driver_connections` gives the hot path connections of its own (then
    the engine's pool gets a quarter of the connection budget, else all of it)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._compiled: dict[int, Compiled] = {}
        self.connections: DriverConnections | None = None
        """The hot path's own driver connections, set by ``Database``; ``None``: the engine's."""
        self.engine_loop: asyncio.AbstractEventLoop | None = None
        """The event loop of the engine's newest connection, where that matters (asyncpg)."""

    # -- set-up ------------------------------------------------------------------------------

    @classmethod
    def engine_options(cls, url: URL, *, pool_size: int, timeouts: Timeouts) -> dict[str, Any]:
        """Keyword arguments for ``create_async_engine`` that the database needs."""
        return {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": timeouts.pool}

    @classmethod
    def finish_engine_options(
        cls, url: URL, options: dict[str, Any], timeouts: Timeouts
    ) -> dict[str, Any]:
        """The engine's options once the caller's are merged in (``connect_args`` included):
        where the database needs them whole, e.g. for a connection creator of its own."""
        return options

    @classmethod
    def driver_connections(
        cls,
        engine: AsyncEngine,
        connect_args: dict[str, Any],
        *,
        max_size: int,
        timeouts: Timeouts,
    ) -> DriverConnections | None:
        """The hot path's own connections for the engine's database, or ``None`` to use the
        engine's pool.

        Args:
            connect_args: the engine's ``connect_args``, which the driver connections share.
            max_size: most connections open at once.
            timeouts: how long to wait on the server.
        """
        return None

    def configure(self, engine: AsyncEngine, timeouts: Timeouts | None = None) -> None:
        """Install per-connection set-up and the translation of connect errors.

        Args:
            timeouts: the ``Database``'s, for settings a database applies per connection.
        """
        backend = self

        @event.listens_for(engine.sync_engine, "handle_error")
        def _connect_failed(context: Any) -> None:
            # No connection: the error came from opening one. Whatever its code (no such
            # database, bad password, not accepting connections), the database cannot be used
            # now, and no statement ran.
            if context.connection is None and not context.is_pre_ping:
                error = context.original_exception
                if isinstance(error, Exception) and not isinstance(error, ConvodbError):
                    translated = backend.translate(error)
                    if isinstance(translated, StoreBusyError):  # SQLite locked during set-up
                        raise translated from error
                    raise StoreUnavailableError(backend.connect_failure(error)) from error

    # -- errors ------------------------------------------------------------------------------

    @classmethod
    def classify(cls, error: BaseException) -> ConvodbError | None:
        """The convodb error a driver error of this database stands for, by its code;
        ``None`` when it is not one of this database's, or is a bug to surface."""
        return None

    @classmethod
    def connect_failure(cls, error: BaseException) -> str:
        """Why a connection could not be opened, for ``StoreUnavailableError``."""
        orig = getattr(error, "orig", None) or error
        if isinstance(orig, TimeoutError):
            return "the database did not answer the connection attempt in time"
        return f"the database cannot be reached ({type(orig).__name__})"

    def translate(self, error: BaseException) -> ConvodbError | None:
        """:func:`translate_error` with this database's codes."""
        return translate_error(error, (type(self).classify,))

    # -- the hot path ------------------------------------------------------------------------

    @property
    def schema_checked(self) -> bool:
        """Whether the schema version need not be checked (again) before the next use."""
        return id(self) not in unchecked

    async def rows(
        self,
        session: AsyncSession,
        statement: Select[Any],
        params: dict[str, Any],
        *,
        own: bool,
        into: Row | None = None,
    ) -> list[Any]:
        """The rows of a Core SELECT, decoded as the session would decode them.

        Args:
            own: the service owns the transaction; the read may run outside the session.
            into: makes each decoded row into what is returned (a record), in the same pass
                and, where the driver runs in a thread of its own, in that thread.
        """
        result = await session.execute(statement, params)
        return list(result) if into is None else list(map(into, result))

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
            owner: ``cid``, ``uid`` and ``now``: the conversation, its owner, the time; and
                ``key`` when the caller acts under an API key: that key must be live
                (``statements.KEY_LIVE``), checked by the statement that reserves the seqs.
            rows: the messages' column values, without ``seq``.
            own: the service owns the transaction: commit it here; otherwise the rows join
                the session's transaction.
            attachments: rows of the attachments table the messages' parts refer to, each
                digest once; a digest the conversation holds already is left as it is.

        Returns:
            The conversation's new ``last_seq``, or ``None`` when it is missing, not the
            user's, or ``key`` is not live (nothing is written then).
        """
        result = await session.execute(bump_seq(owner), {**owner, "n": len(rows)})
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

    # -- row locks and writes that return rows -----------------------------------------------

    async def lock(self, session: AsyncSession, cid: str, uid: str) -> int | None:
        """Lock the user's conversation until the transaction ends; its ``last_seq``, or
        ``None`` when it is missing or not the user's."""
        result = await session.execute(statements.LOCK, {"cid": cid, "uid": uid})
        last_seq = result.scalar_one_or_none()
        return None if last_seq is None else int(last_seq)

    async def insert_conversation(
        self, session: AsyncSession, values: dict[str, Any]
    ) -> Sequence[Any] | None:
        """Insert a conversation unless its id exists; its row (``CONV_COLUMNS``), or
        ``None`` when the id was taken."""
        statement = (
            self.insert_ignoring_conflicts(statements.conversations)
            .values(values)
            .returning(*statements.CONV_COLUMNS)
        )
        return (await session.execute(statement)).one_or_none()

    async def update_returning(
        self,
        session: AsyncSession,
        statement: Update,
        columns: Sequence[Any],
        key: ColumnElement[bool] | None = None,
    ) -> Sequence[Any] | None:
        """Run an UPDATE of at most one row; the row's ``columns`` after it, or ``None``
        when no row matched.

        Args:
            key: what finds the row after the update, where the statement's own condition
                would not (it tests a column the update changes); by default that condition.
        """
        return (await session.execute(statement.returning(*columns))).one_or_none()

    def insert_ignoring_conflicts(self, table: Table) -> Insert:
        """``INSERT ... ON CONFLICT DO NOTHING`` in the dialect's spelling."""
        raise NotImplementedError

    table_sizes_sql: ClassVar[str | None] = None
    """``SELECT`` (table name, bytes on disk with its indexes) of the tables in ``:names``."""

    async def table_sizes(
        self, session: AsyncSession, names: Sequence[str]
    ) -> dict[str, int | None]:
        """Bytes on disk of each table with its indexes, as the database reports them
        (``None`` where it cannot tell)."""
        found: dict[str, int] = {}
        if self.table_sizes_sql is not None:
            statement = text(self.table_sizes_sql).bindparams(bindparam("names", expanding=True))
            rows = await session.execute(statement, {"names": list(names)})
            found = {str(name): int(size) for name, size in rows}
        return {name: found.get(name) for name in names}

    # -- migrations --------------------------------------------------------------------------

    def migration_transaction(
        self, connection: Connection
    ) -> contextlib.AbstractContextManager[Any]:
        """The transaction a migration run holds, excluding concurrent runs where the database
        can (a lock of convodb's own), with no statement timeout."""
        return connection.begin()

    def integrity_violations(self, connection: Connection) -> list[Any]:
        """Rows a migration left without their parent, where the database checks foreign keys
        only on request (SQLite, whose migrations turn them off); checked before the commit."""
        return []

    def _compile(self, statement: Any) -> Compiled:
        cached = self._compiled.get(id(statement))
        if cached is None:
            cached = self._compiled[id(statement)] = Compiled(statement, self.dialect)
        return cached


class Compiled:
    """A Core statement compiled for one dialect, ready to run on its driver."""

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.names = tuple(compiled.positiontup or ())
        # Values fixed in the statement itself, e.g. the 1 of EXISTS (SELECT 1 ...).
        self.fixed = {k: b.value for k, b in compiled.binds.items() if not b.required}
        columns = getattr(statement, "selected_columns", ())
        processors = [_result_processor(c.type, dialect) for c in columns]
        decoders = [(i, p) for i, p in enumerate(processors) if p is not None]
        self._decode_row = _row_decoder(len(processors), decoders)
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

    def decode(self, rows: Iterable[Sequence[Any]], into: Row | None = None) -> list[Any]:
        """The rows with their columns decoded, each made ``into`` a record when given."""
        decode_row = self._decode_row
        if decode_row is None:
            return list(rows) if into is None else list(map(into, rows))
        if into is None:
            return list(map(decode_row, rows))
        return [into(decode_row(row)) for row in rows]


def _row_decoder(
    width: int, decoders: list[tuple[int, Callable[[Any], Any]]]
) -> Callable[[Sequence[Any]], tuple[Any, ...]] | None:
    """One function that decodes a whole row into a tuple, or ``None`` when no column needs
    decoding.

    Written out column by column (``(r[0], None if (v := r[1]) is None else d1(v), ...)``)
    and compiled once per statement: a row of a history read has four columns to decode,
    and a loop over them, on a list copy of the row, cost as much as the rest of the row.
    """
    if not decoders:
        return None
    by_column = dict(decoders)
    items = [
        f"None if (v{i} := r[{i}]) is None else d{i}(v{i})" if i in by_column else f"r[{i}]"
        for i in range(width)
    ]
    source = f"def decode_row(r):\n    return ({', '.join(items)},)\n"
    namespace: dict[str, Any] = {f"d{i}": decoder for i, decoder in decoders}
    exec(compile(source, f"<convodb row decoder: {width} columns>", "exec"), namespace)
    decode_row: Callable[[Sequence[Any]], tuple[Any, ...]] = namespace["decode_row"]
    return decode_row


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


@asynccontextmanager
async def driver(backend: Backend, session: AsyncSession, *, own: bool) -> AsyncIterator[Any]:
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
            if isinstance(backend.translate(exc), StoreUnavailableError):
                await connection.invalidate()  # never hand a broken connection to the next caller
            raise


_LOOP = "convodb.loop"


def one_loop_per_connection(engine: AsyncEngine, backend: Backend) -> None:
    """Never hand out a connection on an event loop other than the one it was made on.

    asyncpg's and asyncmy's connections belong to their loop: after ``asyncio.run`` has
    returned, the pool's connections are unusable on the next loop. A checkout on another
    loop gives the connection up (the socket goes with the garbage collector: its loop is
    gone) and opens a new one. aiosqlite connections answer on any loop and need none of this.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _remember_loop(_dbapi_connection: Any, record: Any) -> None:
        record.info[_LOOP] = backend.engine_loop = asyncio.get_running_loop()

    @event.listens_for(engine.sync_engine, "checkout")
    def _same_loop(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if record.info.get(_LOOP) is not asyncio.get_running_loop():
            raw = dbapi_connection.driver_connection
            with contextlib.suppress(Exception):  # marks it closed; its loop cannot close it
                (raw.terminate if hasattr(raw, "terminate") else raw.close)()
            raise DisconnectionError("the connection belongs to another event loop")


def translate_error(
    exc: BaseException,
    classifiers: Iterable[Callable[[BaseException], ConvodbError | None]],
) -> ConvodbError | None:
    """The convodb error a driver error stands for, or ``None`` if it is a bug to surface.

    Args:
        classifiers: each database's :meth:`Backend.classify`, asked in turn about the
            driver's own error.
    """
    if isinstance(exc, ConvodbError):  # ConversationNotFoundError is an OSError (PermissionError)
        return None
    if isinstance(exc, PoolTimeoutError):  # every pooled connection stayed in use
        return StoreBusyError("no free database connection in time; retry the operation")
    if isinstance(exc, TimeoutError):  # a client-side command timeout: no answer at all
        return StoreUnavailableError("the database did not answer in time")
    if isinstance(exc, OSError):
        return StoreUnavailableError(f"the database cannot be reached: {exc}")
    # Hot paths run on the driver directly (see Backend), so its own errors arrive here too.
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    for classify in classifiers:
        translated = classify(orig)
        if translated is not None:
            return translated
    invalidated = isinstance(exc, DBAPIError) and exc.connection_invalidated
    if invalidated or isinstance(orig, OSError):
        return StoreUnavailableError(f"the database connection was lost: {orig}")
    return None


# The Backends of Databases whose schema version is still to be checked (see convodb._db), by
# id, each gone with its Backend. While it is empty, which is always but for a Database's
# first use, the check costs every service call one test of a dict (a WeakSet's costs a
# method call, ~0.15 us).
unchecked: dict[int, weakref.ref[Backend]] = {}


def set_schema_checked(backend: Backend, checked: bool) -> None:
    """Record that the schema was found at the head revision (or must be checked again)."""
    key = id(backend)
    if checked:
        unchecked.pop(key, None)
    elif key not in unchecked:
        # The callback runs when the Backend is collected, before its id can be reused.
        unchecked[key] = weakref.ref(backend, lambda _ref: unchecked.pop(key, None))
