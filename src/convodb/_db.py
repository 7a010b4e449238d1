"""``Database``: the engine, its sessions and the schema, for one database URL.

Nothing here is module-global except the lazily created default behind the seed's
``get_db_session()``, which tests and apps can replace with :func:`set_default_database`.

convodb never runs on a mismatched schema. A ``Database`` checks its database's schema
version once, on first use (the first service call through one of its sessions, or
:meth:`Database.ping`), and again after :meth:`Database.dispose`; until then every service
call costs one test of an empty dict (``convodb.storage.unchecked_backend``). A schema behind
the code's is upgraded there on SQLite, the embedded default, and refused elsewhere with a
:class:`SchemaVersionError` that names ``convodb db upgrade``. The migrations themselves are
in ``convodb.migrations``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from . import migrations
from ._models import api_keys as api_keys_table
from ._models import conversations, tables
from .errors import StoreUnavailableError
from .storage import (
    Backend,
    Timeouts,
    async_url,
    backend_class,
    engine_budget,
    engine_options,
    register_backend,
    set_schema_checked,
    translate_error,
    unchecked_backend,
)

__all__ = [
    "DEFAULT_DATABASE_URL",
    "Database",
    "get_db_session",
    "owns_transaction",
    "read_transaction",
    "set_default_database",
    "write_transaction",
]

DEFAULT_DATABASE_URL = "sqlite:///convodb.db"
"""The embedded default: a SQLite file in the working directory."""
DEFAULT_MAX_CONNECTIONS = 20
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_POOL_TIMEOUT = 10.0
DEFAULT_STATEMENT_TIMEOUT = 30.0
DEFAULT_IDLE_TIMEOUT = 300.0


class Database:
    """An async engine and its session factory.

    ```python
    async with Database("sqlite:///chat.db") as db:
        await db.create_all()
        async with db.session() as session:
            service = ConversationService(session)
    ```

    Args:
        url: ``sqlite:///path.db`` (the default is ``./convodb.db``), or
            ``postgresql://user@host/db``; the async driver is chosen for you.
        max_connections: the most connections this ``Database`` opens to PostgreSQL at once,
            all pools together (a quarter for the engine's pool, the rest for the hot path's).
            Mind the server's ``max_connections`` (100 by default) across processes. On
            SQLite it bounds the engine's pool; the hot path has one writer and four reader
            threads.
        connect_timeout: seconds to wait for the server to accept a new connection.
        pool_timeout: seconds to wait for a pooled connection to come free.
        statement_timeout: seconds one PostgreSQL statement may run (the server cancels it;
            the client gives up on a server that does not answer a second later); ``None``
            for no limit, e.g. for long operator work. SQLite waits for its lock up to its
            busy timeout instead (30 s; ``?timeout=SECONDS`` in the URL).
        idle_timeout: seconds after which an unused hot-path connection is closed.
        **engine_kwargs: passed to SQLAlchemy's ``create_async_engine``; they override the
            options above.

    Raises:
        MissingDependencyError: the database's driver extra is not installed.
        ValueError: a setting is out of range.
    """

    def __init__(
        self,
        url: str | URL = DEFAULT_DATABASE_URL,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        **engine_kwargs: Any,
    ) -> None:
        self.url = async_url(url)
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("pool_timeout", pool_timeout),
            ("statement_timeout", statement_timeout),
            ("idle_timeout", idle_timeout),
        ):
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ValueError(f"{name} must be a number of seconds > 0; got {value!r}")
        _, hot_path_connections = engine_budget(max_connections)
        self.timeouts = Timeouts(
            connect=connect_timeout,
            pool=pool_timeout,
            statement=statement_timeout,
            idle=idle_timeout,
        )
        self._max_connections = max_connections
        self._engine_kwargs = engine_kwargs
        options = self._engine_options(self.timeouts)
        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        # The hot path's own driver connections (see convodb.storage), unless the engine
        # makes its connections some custom way.
        self._connections = None
        if not {"creator", "async_creator", "poolclass", "pool"} & set(engine_kwargs):
            self._connections = backend_class(self.engine.dialect).driver_connections(
                self.engine,
                options.get("connect_args", {}),
                max_size=hot_path_connections,
                timeouts=self.timeouts,
            )
        self._backend = register_backend(self.engine, self._connections, self.timeouts)
        _open_databases.add(self)

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    @property
    def dialect_name(self) -> str:
        return self.engine.dialect.name

    def clone(self) -> Database:
        """A new ``Database`` on the same URL with the same settings and connections of its
        own: for another event loop. PostgreSQL's and MariaDB's connections belong to the
        loop that opened them, so one ``Database`` must not serve two loops at once (a sync
        API running its own loop in a thread beside your application's, say).

        Raises:
            ValueError: an in-memory SQLite database, which another ``Database`` would see
                as a new, empty one.
        """
        if self.dialect_name == "sqlite" and self.url.database in (None, "", ":memory:"):
            raise ValueError("an in-memory SQLite database cannot be opened twice")
        t = self.timeouts
        return Database(
            self.url,
            max_connections=self._max_connections,
            connect_timeout=t.connect,
            pool_timeout=t.pool,
            statement_timeout=t.statement,
            idle_timeout=t.idle,
            **self._engine_kwargs,
        )

    def _engine_options(self, timeouts: Timeouts) -> dict[str, Any]:
        options = engine_options(self.url, max_connections=self._max_connections, timeouts=timeouts)
        theirs = self._engine_kwargs
        merged = options | {**theirs, "connect_args": _merged_connect_args(options, theirs)}
        return backend_class(self.url).finish_engine_options(self.url, merged, timeouts)

    async def create_all(self, *, api_keys: bool = False) -> None:
        """Create convodb's schema, or bring it to the version this convodb needs.

        The same as :meth:`upgrade`: an empty database gets the current schema (and its
        version); a database made by an older convodb is migrated in place, its data kept.

        Args:
            api_keys: also create the HTTP service's ``api_keys`` table (``ApiKeyService``)
                if it is missing. ``convodb serve`` and ``convodb keys`` ask for it; a
                library that never serves HTTP has no use for it.

        Raises:
            SchemaVersionError: the database was migrated by a newer convodb, or has convodb
                tables that no convodb version made.
            StoreUnavailableError: the database cannot be reached.
            StoreBusyError: another transaction holds a lock.
        """
        await self.upgrade(api_keys=api_keys)

    async def upgrade(self, *, api_keys: bool = False) -> None:
        """Migrate the database to the schema this convodb needs (``convodb db upgrade``).

        An empty database gets the current schema; one at an older revision gets the
        revisions after it; one made by convodb 0.1.0 (no version) is verified to be exactly
        0.1.0's schema and migrated from there. It all happens in one transaction, with no
        statement timeout (a migration may rewrite a large table), and concurrent upgraders
        wait for each other. Nothing is done when the schema is current already.

        Args:
            api_keys: also create the HTTP service's ``api_keys`` table if it is missing.

        Raises:
            SchemaVersionError: the database was migrated by a newer convodb, or has convodb
                tables that no convodb version made; nothing was changed.
            StoreUnavailableError: the database cannot be reached.
            StoreBusyError: another transaction holds a lock (SQLite: longer than its busy
                timeout).
        """
        current, head = await self.schema_version()
        if current != head or (api_keys and not await self._has_table(api_keys_table.name)):
            async with self._migration_engine() as engine:
                await _upgrade(engine, with_api_keys=api_keys)
        set_schema_checked(self._backend, True)

    async def _has_table(self, name: str) -> bool:
        async with _translated(), self.engine.connect() as conn:
            return await conn.run_sync(lambda sync: inspect(sync).has_table(name))

    async def schema_version(self) -> tuple[str | None, str]:
        """``(the database's schema revision, the one this convodb needs)``.

        The database's is ``None`` when it has no version: it is empty, or convodb 0.1.0
        made it (which had no migrations).

        Raises:
            StoreUnavailableError: the database cannot be reached.
        """
        async with _translated(), self.engine.connect() as conn:
            current = await conn.run_sync(migrations.read_version)
        return current, migrations.HEAD

    @asynccontextmanager
    async def _migration_engine(self) -> AsyncIterator[AsyncEngine]:
        """An engine whose connections no statement timeout limits: this one's own, unless the
        timeout is part of how its connections are made (PostgreSQL's server setting and
        asyncpg's client-side timeout). Then a short-lived engine like it, without the
        timeout: SET statement_timeout alone would leave asyncpg's in force."""
        unlimited = self._engine_options(dataclasses.replace(self.timeouts, statement=None))
        if unlimited == self._engine_options(self.timeouts):
            yield self.engine
            return
        engine = create_async_engine(self.url, **unlimited)
        try:
            yield engine
        finally:
            await engine.dispose()

    async def drop_all(self) -> None:
        """Drop convodb's tables (``api_keys`` too), everything in them, and its schema version."""

        def drop(connection: Any) -> None:
            every = tables(with_api_keys=True)
            every[0].metadata.drop_all(connection, tables=every, checkfirst=True)
            migrations.version_table.drop(connection, checkfirst=True)

        async with _translated(), self.engine.begin() as conn:
            await conn.run_sync(drop)
        set_schema_checked(self._backend, False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session that commits when the block succeeds and rolls back when it raises."""
        session = self.sessionmaker()
        # The service's hot path often leaves the session untouched (it ran on a pooled
        # connection of its own): then there is nothing to commit or close, and skipping both
        # saves two greenlet round trips per request.
        touched = False
        try:
            yield session
            if touched := _touched(session):
                await session.commit()
        except BaseException:
            if touched := touched or _touched(session):
                await session.rollback()
            raise
        finally:
            if touched:
                await session.close()

    async def ping(self) -> None:
        """Check that the database answers and holds convodb's schema, within the timeouts.

        The first ping checks the schema version too, as the first use of the database does
        (on SQLite, that upgrades a schema behind the code's).

        Raises:
            StoreUnavailableError: it cannot be reached, or the tables are missing.
            StoreBusyError: no pooled connection was free in time.
            SchemaVersionError: the schema is not the version this convodb needs.
        """
        try:
            async with _translated(), self.engine.connect() as conn:
                await conn.execute(select(conversations.c.id).limit(1))
        except DBAPIError as exc:  # reachable, but not convodb's schema (yet)
            raise StoreUnavailableError(f"the database is not ready: {exc.orig}") from exc
        if not self._backend.schema_checked:
            await _check_schema(self.engine, self._backend)

    async def dispose(self) -> None:
        """Close every pooled connection (the next use opens new ones, and checks the schema
        version again)."""
        set_schema_checked(self._backend, False)
        if self._connections is not None:
            await self._connections.close()
        # Connections made on an event loop that has ended cannot be closed on this one
        # (asyncpg); they are let go instead.
        loop = self._backend.engine_loop
        await self.engine.dispose(close=loop is None or loop is asyncio.get_running_loop())

    def _forked(self) -> None:
        # In a forked child the engine's pooled connections are the parent's (their sockets,
        # their aiosqlite threads, which the child does not have): forget them without closing
        # them, as SQLAlchemy advises for multiprocessing. The hot path's own connections
        # notice the new process themselves.
        self.engine.sync_engine.dispose(close=False)

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.dispose()


def _merged_connect_args(options: dict[str, Any], engine_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The caller's ``connect_args`` over convodb's, server settings merged key by key (so
    that an ``application_name`` does not drop the statement timeout)."""
    ours: dict[str, Any] = options.get("connect_args", {})
    theirs: dict[str, Any] = engine_kwargs.get("connect_args", {})
    merged = {**ours, **theirs}
    if "server_settings" in ours and "server_settings" in theirs:
        merged["server_settings"] = {**ours["server_settings"], **theirs["server_settings"]}
    return merged


def _touched(session: AsyncSession) -> bool:
    """Whether the session holds a transaction or any object, i.e. has anything to end."""
    sync = session.sync_session
    return (
        session.in_transaction() or bool(sync.identity_map) or bool(sync.new) or bool(sync.deleted)
    )


def owns_transaction(session: AsyncSession, *, commit: bool) -> bool:
    """Whether a service call on ``session`` opens and ends its own transaction.

    True in ``commit`` mode when the session is not in a transaction yet: then a single
    statement may run outside any transaction (see ``convodb.storage.Backend``). A session
    bound to a connection (the "join an external transaction" recipe) may be inside a
    transaction it does not know of, so it never owns one.
    """
    return commit and not session.in_transaction() and isinstance(session.bind, AsyncEngine)


@asynccontextmanager
async def write_transaction(session: AsyncSession, *, commit: bool) -> AsyncIterator[None]:
    """One service write: committed here in ``commit`` mode, rolled back on any error
    (cancellation included), driver errors translated into convodb's."""
    unchecked = unchecked_backend(session)
    if unchecked is not None:
        await _check_schema(_engine_of(session), unchecked)
    try:
        try:
            yield
            # A hot-path write the service owned committed on a connection of its own already.
            if commit and session.in_transaction():
                await session.commit()
        except BaseException:
            if commit and session.in_transaction():
                await session.rollback()
            raise
    except Exception as exc:
        _raise_translated(exc)
        raise


@asynccontextmanager
async def read_transaction(session: AsyncSession, *, commit: bool) -> AsyncIterator[bool]:
    """One service read; yields whether the service owns the transaction.

    An owned read that used the session ends the session's transaction, which returns its
    connection to the pool (the hot-path reads of ``Backend`` do not use the session).
    """
    unchecked = unchecked_backend(session)
    if unchecked is not None:
        await _check_schema(_engine_of(session), unchecked)
    own = owns_transaction(session, commit=commit)
    try:
        try:
            yield own
            if own and session.in_transaction():
                await session.commit()
        except BaseException:
            if own and session.in_transaction():
                await session.rollback()
            raise
    except Exception as exc:
        _raise_translated(exc)
        raise


def _engine_of(session: AsyncSession) -> AsyncEngine:
    bind = session.bind
    if isinstance(bind, AsyncEngine):
        return bind
    if bind is not None:  # a connection of the engine
        return bind.engine
    return AsyncEngine(session.get_bind().engine)  # a session bound per mapper


async def _check_schema(engine: AsyncEngine, backend: Backend) -> None:
    """Once per Database: its schema is at the head revision, or is brought there (SQLite),
    or the caller gets a SchemaVersionError. On its own connection, never the session's."""
    async with _translated(), engine.connect() as conn:
        current = await conn.run_sync(migrations.read_version)
        state = migrations.classify(current)
        if state == "unknown":
            raise migrations.ahead_error(current)
        if state == "behind":
            from .migrations._run import convodb_tables

            if current is None and not await conn.run_sync(convodb_tables):
                raise migrations.no_schema_error()
            if not backend.upgrades_on_open:
                raise migrations.behind_error(current)
    if state == "behind":
        await _upgrade(engine)
    set_schema_checked(backend, True)


async def _upgrade(engine: AsyncEngine, *, with_api_keys: bool = False) -> None:
    from .migrations._run import upgrade  # Alembic: imported only when there is work for it

    # Alembic keeps the running migration in process-global proxies (alembic.context,
    # alembic.op): two at once in one process, even on different databases or event loops,
    # trample each other. So one at a time, under a thread lock that a waiter polls:
    # acquire() would block its event loop, and to_thread(acquire) could take the lock for a
    # waiter already cancelled, never to release it.
    while not _migrating.acquire(blocking=False):  # noqa: ASYNC110 (see above)
        await asyncio.sleep(0.01)
    try:
        async with _translated(), engine.connect() as conn:
            await conn.run_sync(upgrade, with_api_keys=with_api_keys)
    finally:
        _migrating.release()


_migrating = threading.Lock()


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    """Driver errors (SQLAlchemy's or the driver's own) as convodb's, where it has a type."""
    try:
        yield
    except Exception as exc:
        _raise_translated(exc)
        raise


def _raise_translated(exc: Exception) -> None:
    """Raise convodb's error for a driver error (SQLAlchemy's or the driver's own) that has
    one; return for any other exception, which the caller re-raises."""
    if (translated := translate_error(exc)) is not None:
        raise translated from exc


_default: Database | None = None
_open_databases: weakref.WeakSet[Database] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for database in list(_open_databases):
        database._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


def default_database_url() -> str:
    """``CONVODB_DATABASE_URL``, else ``DATABASE_URL``, else the embedded SQLite file."""
    return (
        os.environ.get("CONVODB_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
        or DEFAULT_DATABASE_URL
    )


def set_default_database(database: Database | None) -> None:
    """Replace the database behind :func:`get_db_session` (``None``: read the environment again)."""
    global _default
    _default = database


@asynccontextmanager
async def get_db_session() -> AsyncIterator[AsyncSession]:
    """The seed's session helper, over the default database.

    The default is created on first use from :func:`default_database_url`. The session
    commits when the block succeeds and rolls back when it raises.
    """
    global _default
    if _default is None:
        _default = Database(default_database_url())
    async with _default.session() as session:
        yield session
