"""Storage: one module per database behind one interface (``_base.Backend``).

==============  =================  ==============================================
database        module             driver (extra)
==============  =================  ==============================================
SQLite          ``_sqlite``        aiosqlite, and threads of convodb's own
PostgreSQL      ``_postgresql``    asyncpg (``postgres``), and a pool of its own
MariaDB, MySQL  ``_mysql``         asyncmy (``mysql``), through the engine's pool
==============  =================  ==============================================

Every difference between databases lives in its module; the service calls a ``Backend`` and
never asks which database it runs on. What they share (compiling Core statements once per
dialect, running them on the bare driver, timeouts, errors that are the same everywhere) is in
``_base``; the SQL itself is the Core statements of ``convodb._statements``, shared by all.

To add a database: write a module with a :class:`~convodb.storage._base.Backend` subclass
(its URL schemes, driver and extra; engine options; ``insert_ignoring_conflicts``; its error
codes in ``classify``; and whatever of the hot path it does better than the defaults, which
run Core statements through the session), add it to :data:`BACKENDS`, and add the database to
the test suite's ``BACKENDS`` (``tests/conftest.py``): every store test then runs on it.
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from ..errors import ConvodbError, MissingDependencyError
from ._base import (
    Backend,
    DriverConnections,
    Row,
    Timeouts,
    engine_budget,
    set_schema_checked,
    unchecked,
)
from ._base import translate_error as _translate_error
from ._mysql import MySQLBackend
from ._postgresql import PostgresBackend
from ._sqlite import SQLiteBackend

__all__ = [
    "BACKENDS",
    "Backend",
    "DriverConnections",
    "Row",
    "Timeouts",
    "async_url",
    "backend_for",
    "backend_class",
    "engine_budget",
    "engine_options",
    "register_backend",
    "set_schema_checked",
    "translate_error",
    "unchecked_backend",
]

BACKENDS: dict[str, type[Backend]] = {
    backend.name: backend for backend in (SQLiteBackend, PostgresBackend, MySQLBackend)
}
"""Each supported database's Backend, by SQLAlchemy dialect name."""
BACKENDS["mariadb"] = MySQLBackend  # SQLAlchemy's name for an engine made by a mariadb:// URL
_SCHEMES = {scheme: backend for backend in BACKENDS.values() for scheme in backend.schemes}


def async_url(url: str | URL) -> URL:
    """The URL with its async driver: ``sqlite:///x.db`` -> ``sqlite+aiosqlite:///x.db``.

    Raises:
        MissingDependencyError: the driver for this database is not installed.
        ValueError: the database is not one convodb supports.
    """
    parsed = make_url(url)
    backend = _SCHEMES.get(parsed.get_backend_name())
    if backend is None:
        raise ValueError(
            f"unsupported database {parsed.get_backend_name()!r} in URL; convodb supports "
            f"{sorted(_SCHEMES)}"
        )
    if backend.extra is not None:
        try:
            __import__(backend.driver_name)
        except ImportError:
            raise MissingDependencyError(backend.driver_name, backend.extra) from None
    return parsed.set(drivername=f"{backend.name}+{backend.driver_name}")


def backend_class(dialect: Dialect | URL) -> type[Backend]:
    """The Backend of a dialect (or of a URL :func:`async_url` made)."""
    name = dialect.get_backend_name() if isinstance(dialect, URL) else dialect.name
    if name not in BACKENDS:
        raise NotImplementedError(f"convodb does not support the {name!r} dialect")
    return BACKENDS[name]


def engine_options(url: URL, *, max_connections: int, timeouts: Timeouts) -> dict[str, Any]:
    """Keyword arguments for ``create_async_engine`` that the database needs: the engine's
    pool gets a quarter of ``max_connections``, or all of them where the hot path has no
    connections of its own."""
    backend = backend_class(url)
    pool_size, _ = engine_budget(max_connections)
    if not backend.has_driver_connections:
        pool_size = max_connections
    return backend.engine_options(url, pool_size=pool_size, timeouts=timeouts)


def translate_error(exc: BaseException) -> ConvodbError | None:
    """The convodb error a driver error stands for, or ``None`` if it is a bug to surface."""
    return _translate_error(exc, (backend.classify for backend in BACKENDS.values()))


# The Backend of each engine (the sync Engine behind an AsyncEngine), gone with it: a Backend
# holds the dialect and its driver connections, never the engine.
_backends: weakref.WeakKeyDictionary[Engine, Backend] = weakref.WeakKeyDictionary()


def register_backend(
    engine: AsyncEngine, connections: DriverConnections | None, timeouts: Timeouts
) -> Backend:
    """Make and configure the Backend of ``engine``, with the hot path's own driver
    connections; its schema version is to be checked on first use."""
    backend = _backends[engine.sync_engine] = backend_class(engine.dialect)(engine.dialect)
    backend.connections = connections
    backend.configure(engine, timeouts)
    set_schema_checked(backend, False)
    return backend


def unchecked_backend(session: AsyncSession) -> Backend | None:
    """The session's Backend if its database's schema version is still to be checked.

    Only engines made by a ``Database`` are checked; an engine of the caller's own is the
    caller's to keep at the head revision.
    """
    if not unchecked:
        return None
    backend = backend_for(session)
    return None if backend.schema_checked else backend


def backend_for(session: AsyncSession) -> Backend:
    """The Backend for the session's database (one without driver connections when the
    session's engine was not made by a ``Database``)."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    backend = _backends.get(engine)
    if backend is None:
        backend = _backends[engine] = backend_class(engine.dialect)(engine.dialect)
    return backend
