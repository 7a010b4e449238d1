"""One ``db`` fixture, parametrized over every supported database.

Store tests ask for ``db`` (a :class:`convodb.Database` with an empty schema) or ``service``
and never ask which database they got. PostgreSQL gets a fresh ``convodb_test_<hex>`` database
per test run, dropped at the end; SQLite a new file per test.

PostgreSQL is found at ``CONVODB_TEST_POSTGRES_URL`` (default: the local server's ``test``
database), MariaDB at ``CONVODB_TEST_MARIADB_URL`` (default: the local server as root); each
gets a ``convodb_test_<hex>`` database of its own for the run, dropped at the end. When a
server is unreachable, its part of the suite is skipped with one reason, except under CI
(``CI=true``), where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from convodb import ConversationService, Database
from convodb._models import tables

if TYPE_CHECKING:
    from tests._http import Api

POSTGRES_URL = os.environ.get(
    "CONVODB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get("CONVODB_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test")
BACKENDS = ["sqlite", "postgresql", "mariadb"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _server_url() -> URL:
    return make_url(POSTGRES_URL).set(drivername="postgresql+asyncpg")


async def _admin(statement: str) -> None:
    engine = create_async_engine(_server_url(), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _create_database(name: str) -> None:
    # CREATE DATABASE copies template1 and fails (SQLSTATE 55006) while another client,
    # such as a parallel test run creating its own database, is connected to it: retry.
    for attempt in range(40):
        try:
            await _admin(f'CREATE DATABASE "{name}"')
            return
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55006" or attempt == 39:
                raise
            await asyncio.sleep(0.25)


async def _drop_database(name: str) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, with convodb's schema.

    A sync fixture around its own event loop: async fixtures cannot request it lazily.
    """
    server = _server_url()
    name = f"convodb_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_create_database(name))
    except Exception as exc:
        message = f"PostgreSQL unreachable at {server.render_as_string()}: {exc!r:.200}"
        if IN_CI:
            pytest.fail(f"{message} (CI requires PostgreSQL)", pytrace=False)
        pytest.skip(message)
    url = server.set(database=name).render_as_string(hide_password=False)

    try:
        asyncio.run(_create_schema(url))
        yield url
    finally:
        asyncio.run(_drop_database(name))


async def _create_schema(url: str) -> None:
    """convodb's schema, the HTTP service's API keys included, in a run's fresh database."""
    database = Database(url)
    await database.create_all(api_keys=True)
    await database.dispose()


def _mariadb_server() -> URL:
    return make_url(MARIADB_URL).set(drivername="mysql+asyncmy")


async def _mariadb_admin(statement: str) -> None:
    engine = create_async_engine(_mariadb_server())
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _create_mariadb_database(name: str) -> None:
    await _mariadb_admin(
        f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin"
    )


async def _drop_mariadb_database(name: str) -> None:
    await _mariadb_admin(f"DROP DATABASE IF EXISTS `{name}`")


def _mariadb_database_url(name: str) -> str:
    return make_url(MARIADB_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A fresh MariaDB database for this test run, with convodb's schema."""
    name = f"convodb_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_create_mariadb_database(name))
    except Exception as exc:
        message = f"MariaDB unreachable at {_mariadb_server().render_as_string()}: {exc!r:.200}"
        if IN_CI:
            pytest.fail(f"{message} (CI requires MariaDB)", pytrace=False)
        pytest.skip(message)
    url = _mariadb_database_url(name)

    try:
        asyncio.run(_create_schema(url))
        yield url
    finally:
        asyncio.run(_drop_mariadb_database(name))


@asynccontextmanager
async def empty_postgres_database() -> AsyncIterator[str]:
    """The URL of a new, empty PostgreSQL database of its own, dropped afterwards. Ask for
    ``postgres_url`` first: it skips (or fails, in CI) when PostgreSQL is unreachable."""
    name = f"convodb_test_{uuid.uuid4().hex[:12]}"
    await _create_database(name)
    try:
        yield _server_url().set(database=name).render_as_string(hide_password=False)
    finally:
        await _drop_database(name)


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, no tables at all, on each supported backend (PostgreSQL: a new
    database of its own per test). Sync, like ``postgres_url``, which it asks for first."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if request.param == "mariadb":
        request.getfixturevalue("mariadb_url")
        name = f"convodb_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(_create_mariadb_database(name))
        try:
            yield _mariadb_database_url(name)
        finally:
            asyncio.run(_drop_mariadb_database(name))
        return
    request.getfixturevalue("postgres_url")
    name = f"convodb_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(name))
    try:
        yield _server_url().set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_drop_database(name))


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'convodb.db'}"
    if request.param == "mariadb":
        return str(request.getfixturevalue("mariadb_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """An empty convodb database on each supported backend, with the HTTP service's
    ``api_keys`` table."""
    database = Database(database_url)
    if database.dialect_name == "sqlite":
        await database.create_all(api_keys=True)
    elif database.dialect_name == "postgresql":
        names = ", ".join(t.name for t in tables(with_api_keys=True))
        async with database.engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {names} CASCADE"))
    else:  # MariaDB: TRUNCATE refuses tables that foreign keys point to
        async with database.engine.begin() as conn:
            for table in reversed(tables(with_api_keys=True)):
                await conn.execute(table.delete())
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def service(db: Database) -> AsyncIterator[ConversationService]:
    """A service on a session of ``db``."""
    async with db.session() as session:
        yield ConversationService(session)


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    """The HTTP app on ``db`` (API keys and HS256 JWTs on), with an in-process client."""
    # Imported here: the rest of the suite does not need the server extra.
    from convodb.server import create_app
    from tests._http import Api, make_client, settings

    app = create_app(settings(), database=db)
    async with make_client(app) as client:
        yield Api(db, app, client)
