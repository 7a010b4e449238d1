"""Everything that differs between databases, in one place.

The service never asks which database it runs on; it calls into this module, which knows:

- how to turn a URL a user writes (``sqlite:///chat.db``, ``postgresql://...``) into the async
  driver's URL, and which driver extra provides it;
- the connection set-up SQLite needs to be a good embedded store: WAL (readers never block the
  writer), a busy timeout (writers queue instead of failing; ``?timeout=SECONDS`` in the URL
  overrides it), foreign keys on (they are off by default and deletes cascade through them),
  ``synchronous=NORMAL`` (durable across process crashes; the documented pairing with WAL);
- "insert unless the key exists", which each dialect spells differently;
- which driver errors mean "busy, retry" or "unreachable", by SQLSTATE and SQLite error name,
  never by matching message text.

SQLite transactions: the ``sqlite3`` module begins a transaction implicitly before the first
INSERT/UPDATE/DELETE and runs a SELECT outside any transaction. convodb relies on that: a read
never holds a snapshot that a later write would have to upgrade (an upgrade fails at once with
SQLITE_BUSY when another writer committed meanwhile), and an append's first statement is the
write that takes the lock, waiting up to the busy timeout, before anything is read.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import Insert

from .errors import ConvodbError, MissingDependencyError, StoreBusyError, StoreUnavailableError

__all__ = [
    "async_url",
    "configure_engine",
    "engine_options",
    "insert_ignoring_conflicts",
    "translate_error",
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


def engine_options(url: URL) -> dict[str, Any]:
    """Keyword arguments for ``create_async_engine`` that the database needs."""
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            # Every connection to :memory: is a new, empty database: share one connection.
            return {"poolclass": StaticPool}
        if "timeout" not in url.query:  # sqlite3's busy timeout; ?timeout=SECONDS overrides
            return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
    if url.get_backend_name() == "postgresql":
        return {"pool_pre_ping": True}
    return {}


def configure_engine(engine: AsyncEngine) -> None:
    """Install per-connection set-up (SQLite pragmas); a no-op for other databases."""
    if engine.dialect.name != "sqlite":
        return
    in_memory = engine.url.database in (None, "", ":memory:")

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()


def insert_ignoring_conflicts(table: Table, dialect_name: str) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the dialect's spelling."""
    if dialect_name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect_name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"convodb does not support the {dialect_name!r} dialect")


# SQLSTATE classes and codes (PostgreSQL appendix A)
_PG_BUSY = {"40001", "40P01", "55P03", "57014"}  # serialization, deadlock, lock, cancelled
_PG_UNAVAILABLE_CLASSES = {"08", "53", "57"}  # connection, resources, operator intervention


def translate_error(exc: BaseException) -> ConvodbError | None:
    """The convodb error a driver error stands for, or ``None`` if it is a bug to surface."""
    if isinstance(exc, ConvodbError):  # ConversationNotFoundError is an OSError (PermissionError)
        return None
    if isinstance(exc, OSError):
        return StoreUnavailableError(f"the database cannot be reached: {exc}")
    if not isinstance(exc, DBAPIError):
        return None
    orig = exc.orig
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
    if exc.connection_invalidated or isinstance(orig, OSError):
        return StoreUnavailableError(f"the database connection was lost: {orig}")
    return None
