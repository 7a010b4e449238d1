"""A ``Database``'s connections and threads over its life: event loops, forks, budgets, leaks,
timeouts. Each test runs on every database where its hazard exists."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from convodb import (
    ConversationService,
    Database,
    StoreBusyError,
    StoreUnavailableError,
)
from convodb.storage._mysql import MyConnections
from convodb.storage._pool import DriverPool
from convodb.storage._postgresql import PgConnections


async def _use(database: Database, content: str) -> list[str | None]:
    """The engine's path (create, list) and the hot path (append, history), once each."""
    async with database.session() as session:
        service = ConversationService(session)
        cid = (await service.create_conversation("alice")).id
        await service.save_message(cid, "user", content, user_id="alice")
        assert cid in [c.id for c in (await service.list_conversations("alice")).items]
        return [m.text for m in await service.get_conversation_history(cid, "alice")]


def test_one_database_serves_one_event_loop_after_another(database_url: str) -> None:
    # A script that calls asyncio.run() per job, or a test runner with a loop per test,
    # keeps one Database: connections of an ended loop must never be handed out again.
    database = Database(database_url)

    async def job(n: int) -> list[str | None]:
        await database.create_all()
        return await _use(database, f"loop {n}")

    with warnings.catch_warnings():
        # The ended loops' sockets are closed by the garbage collector, which may say so.
        warnings.simplefilter("ignore", ResourceWarning)
        for n in range(3):
            assert asyncio.run(job(n)) == [f"loop {n}"]
        asyncio.run(database.dispose())
        gc.collect()


def _convodb_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("convodb-")]


async def test_a_database_dropped_without_dispose_stops_its_threads(tmp_path: Path) -> None:
    before = _convodb_threads()
    for i in range(5):
        database = Database(f"sqlite:///{tmp_path / f'{i}.db'}")
        await database.create_all()
        async with database.session() as session:
            service = ConversationService(session)
            cid = (await service.create_conversation("alice")).id
            await service.save_message(cid, "user", "hi", user_id="alice")
            await service.get_conversation_history(cid, "alice")
        assert len(_convodb_threads()) > len(before)
        await database.engine.dispose()  # SQLAlchemy's pool is SQLAlchemy's to close
        del database, session, service
    deadline = time.monotonic() + 10
    while _convodb_threads() != before and time.monotonic() < deadline:
        gc.collect()
        await asyncio.sleep(0.05)
    assert _convodb_threads() == before


async def test_dispose_stops_the_threads_and_the_next_use_restarts_them(tmp_path: Path) -> None:
    before = _convodb_threads()
    async with Database(f"sqlite:///{tmp_path / 'x.db'}") as database:
        await database.create_all()
        assert await _use(database, "one") == ["one"]
        await database.dispose()
        assert _convodb_threads() == before
        assert await _use(database, "two") == ["two"]
    assert _convodb_threads() == before


# -- PostgreSQL: connections on the server ---------------------------------------------------


@asynccontextmanager
async def _admin(url: str) -> AsyncIterator[Any]:
    """A plain asyncpg connection to the test database, outside every convodb pool."""
    import asyncpg  # type: ignore[import-untyped]

    parsed = make_url(url)
    connection = await asyncpg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, database=parsed.database
    )
    try:
        yield connection
    finally:
        await connection.close()


async def _sessions(admin: Any, application: str) -> int:
    count: int = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application
    )
    return count


def _named(application: str) -> dict[str, Any]:
    return {"connect_args": {"server_settings": {"application_name": application}}}


async def test_a_statement_the_driver_refuses_leaves_no_lock_behind(postgres_url: str) -> None:
    # asyncpg refuses an out-of-range argument after it has sent the statement: the server
    # then holds the statement's locks until the connection says more. That connection must
    # never go back to the pool, or ALTER TABLE (and everything queued behind it) waits.
    import asyncpg

    async with Database(postgres_url) as database:
        pool = database._connections
        assert isinstance(pool, PgConnections)
        async with database.session() as session:
            cid = (await ConversationService(session).create_conversation("alice")).id
        with pytest.raises(asyncpg.DataError):
            async with pool.connection() as connection:
                await connection.fetch(
                    "SELECT seq FROM messages WHERE conversation_id = $1 AND seq > $2",
                    cid,
                    2**70,
                )
        async with database.engine.connect() as connection:
            async with connection.begin():
                await connection.execute(text("SET LOCAL lock_timeout = '2s'"))
                await connection.execute(
                    text("LOCK TABLE conversations, messages IN ACCESS EXCLUSIVE MODE")
                )
        async with database.session() as session:
            service = ConversationService(session)
            await service.save_message(cid, "user", "still works", user_id="alice")
            assert len(await service.get_conversation_history(cid, "alice")) == 1


async def test_connections_stay_within_the_budget_and_idle_ones_close(postgres_url: str) -> None:
    name = "convodb-test-budget"
    database = Database(postgres_url, max_connections=4, idle_timeout=0.5, **_named(name))
    async with _admin(postgres_url) as admin, database:
        async with database.session() as session:
            service = ConversationService(session)
            cids = [(await service.create_conversation("alice")).id for _ in range(10)]
        peak = 0
        stop = asyncio.Event()

        async def watch() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, await _sessions(admin, name))
                await asyncio.sleep(0.01)

        async def work(cid: str) -> None:
            for i in range(10):
                async with database.session() as session:
                    service = ConversationService(session)
                    await service.save_message(cid, "user", f"m{i}", user_id="alice")
                    await service.get_conversation_history(cid, "alice")
                    await service.list_conversations("alice", limit=5)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(work(cid) for cid in cids * 3))
        stop.set()
        await watcher
        assert 2 <= peak <= 4
        # The hot path's idle connections close; the engine's pool keeps its one.
        for _ in range(100):  # up to 10 s
            if await _sessions(admin, name) <= 1:
                break
            await asyncio.sleep(0.1)
        assert await _sessions(admin, name) <= 1


@pytest.fixture(params=["postgresql", "mariadb"])
def server_url(request: pytest.FixtureRequest) -> str:
    """The run's database on each server database (the ones with a pool of convodb's own)."""
    fixture = {"postgresql": "postgres_url", "mariadb": "mariadb_url"}[request.param]
    return str(request.getfixturevalue(fixture))


async def test_a_full_pool_is_a_clean_error_in_bounded_time(server_url: str) -> None:
    async with Database(server_url, max_connections=2, pool_timeout=0.3) as database:
        async with database.session() as session:
            cid = (await ConversationService(session).create_conversation("alice")).id
        pool = database._connections
        assert isinstance(pool, DriverPool)
        async with pool.connection(), database.engine.connect():
            async with database.session() as session:
                service = ConversationService(session)
                started = time.monotonic()
                with pytest.raises(StoreBusyError):  # the hot path's pool
                    await service.get_conversation_history(cid, "alice")
                with pytest.raises(StoreBusyError):  # the engine's pool
                    await service.list_conversations("alice")
                assert time.monotonic() - started < 3
        async with database.session() as session:  # nothing is left stuck
            service = ConversationService(session)
            assert await service.get_conversation_history(cid, "alice") == []
            await service.delete_conversation(cid, "alice")


async def test_a_statement_waiting_too_long_is_cancelled_cleanly(postgres_url: str) -> None:
    async with Database(postgres_url, statement_timeout=0.5) as database:
        async with database.session() as session:
            cid = (await ConversationService(session).create_conversation("alice")).id
        async with _admin(postgres_url) as admin:
            locker = admin.transaction()
            await locker.start()
            await admin.execute("LOCK TABLE conversations, messages IN ACCESS EXCLUSIVE MODE")
            try:
                async with database.session() as session:
                    service = ConversationService(session)
                    for call in (
                        service.save_message(cid, "user", "waits", user_id="alice"),  # hot path
                        service.list_conversations("alice"),  # the engine's
                    ):
                        started = time.monotonic()
                        with pytest.raises(StoreBusyError):
                            await call
                        assert time.monotonic() - started < 5
            finally:
                await locker.rollback()
        async with database.session() as session:
            service = ConversationService(session)
            await service.save_message(cid, "user", "after", user_id="alice")
            assert [m.content for m in await service.get_conversation_history(cid, "alice")] == [
                "after"
            ]


async def test_a_missing_database_is_store_unavailable(server_url: str) -> None:
    missing = make_url(server_url).set(database="convodb_no_such_database")
    code = "3D000" if missing.get_backend_name() == "postgresql" else "1049"
    async with Database(missing) as database:
        with pytest.raises(StoreUnavailableError, match=code):
            await database.ping()
        async with database.session() as session:  # the hot path's own connections
            with pytest.raises(StoreUnavailableError, match=code):
                await ConversationService(session).get_conversation_history("c1", "alice")


def test_settings_out_of_range_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="max_connections must be an integer >= 2"):
        Database("sqlite:///x.db", max_connections=1)
    with pytest.raises(ValueError, match="statement_timeout must be a number of seconds > 0"):
        Database("sqlite:///x.db", statement_timeout=0)


async def test_a_server_that_accepts_and_never_answers_is_unavailable_in_bounded_time(
    server_url: str,
) -> None:
    # A proxy or a stuck server: the TCP connection opens, the greeting never comes.
    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = make_url(server_url).set(host="127.0.0.1", port=port)
    try:
        async with Database(url, connect_timeout=1, pool_timeout=1) as database:
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                await database.ping()  # the engine's connections
            pool = database._connections
            assert isinstance(pool, DriverPool)
            with pytest.raises(StoreUnavailableError):
                async with pool.connection():  # the hot path's own
                    pass
            assert time.monotonic() - started < 6
    finally:
        server.close()


async def test_a_read_the_server_refused_leaves_no_transaction_open(mariadb_url: str) -> None:
    # autocommit is off on MariaDB's hot-path connections: a statement that fails on the
    # server leaves its transaction, and the metadata locks it holds, open unless rolled
    # back; the connection would then wait in the pool blocking ALTER TABLE.
    import asyncmy

    async with Database(mariadb_url) as database:
        pool = database._connections
        assert isinstance(pool, MyConnections)
        with pytest.raises(asyncmy.errors.Error, match="1242"):
            async with pool.connection() as connection, connection.cursor() as cursor:
                # The first statement of the transaction fails: 1242, a subquery of two rows.
                await cursor.execute(
                    "SELECT id FROM conversations WHERE id = (SELECT 'a' UNION SELECT 'b')"
                )
        url = make_url(mariadb_url)
        admin = await asyncmy.connect(
            host=url.host, port=url.port or 3306, user=url.username, database=url.database
        )
        try:
            async with admin.cursor() as cursor:
                await cursor.execute("SET SESSION lock_wait_timeout = 2")
                await cursor.execute("LOCK TABLES conversations WRITE")  # waits on any reader
                await cursor.execute("UNLOCK TABLES")
        finally:
            await admin.ensure_closed()
