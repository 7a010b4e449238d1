"""``Database`` and the seed's ``get_db_session``: URLs, sessions, defaults, driver errors."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from convodb import (
    ConversationService,
    Database,
    StoreBusyError,
    StoreUnavailableError,
    get_db_session,
    set_default_database,
)

from ._store import state


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///chat.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///chat.db", "sqlite+aiosqlite"),
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("postgres://u@h/db", "postgresql+asyncpg"),
        ("postgresql+psycopg://u@h/db", "postgresql+asyncpg"),
        ("mysql://u@h/db", "mysql+asyncmy"),
        ("mariadb://u@h/db", "mysql+asyncmy"),
        ("mysql+aiomysql://u@h/db", "mysql+asyncmy"),
    ],
)
async def test_plain_urls_get_the_async_driver(url: str, driver: str) -> None:
    database = Database(url)
    try:
        assert database.url.drivername == driver
    finally:
        await database.dispose()


def test_unsupported_database_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unsupported database 'oracle'"):
        Database("oracle://u@h/db")


async def test_session_commits_on_success_and_rolls_back_on_error(db: Database) -> None:
    async with db.session() as session:
        cid = (await ConversationService(session, commit=False).create_conversation("alice")).id

    with pytest.raises(RuntimeError):
        async with db.session() as session:
            service = ConversationService(session, commit=False)
            await service.save_message(cid, "user", "lost", user_id="alice")
            raise RuntimeError("the request failed after the append")

    assert (await state(db, cid)).messages == 0
    assert (await state(db, cid)).last_seq == 0


async def test_commit_false_joins_the_callers_transaction(db: Database) -> None:
    async with db.session() as session:
        service = ConversationService(session, commit=False)
        cid = (await service.create_conversation("alice")).id
        await service.save_message(cid, "user", "one", user_id="alice")
        assert (await state(db, cid)).conversations == 0  # not committed yet
    assert (await state(db, cid)).messages == 1


async def test_in_memory_sqlite_keeps_its_data_across_sessions() -> None:
    async with Database("sqlite:///:memory:") as database:
        await database.create_all()
        async with database.session() as session:
            cid = (await ConversationService(session).create_conversation("alice")).id
        async with database.session() as session:
            assert (await ConversationService(session).get_conversation(cid, "alice")).id == cid


async def test_get_db_session_uses_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVODB_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("DATABASE_URL", "postgresql://ignored@nowhere/db")
    set_default_database(None)
    try:
        async with get_db_session() as session:
            assert session.get_bind().engine.url.database == str(tmp_path / "env.db")
    finally:
        from convodb import _db

        if _db._default is not None:
            await _db._default.dispose()
        set_default_database(None)


async def test_get_db_session_uses_a_replaced_default(db: Database) -> None:
    set_default_database(db)
    try:
        async with get_db_session() as session:
            cid = (await ConversationService(session).create_conversation("alice")).id
        assert (await state(db, cid)).conversations == 1
    finally:
        set_default_database(None)


async def test_busy_sqlite_raises_store_busy_and_stores_nothing(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    async with Database(f"sqlite:///{path}?timeout=0.05") as database:
        await database.create_all()
        async with database.session() as session:
            cid = (await ConversationService(session).create_conversation("alice")).id

        async with aiosqlite.connect(path) as other:
            await other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            async with database.session() as session:
                with pytest.raises(StoreBusyError, match="retry"):
                    await ConversationService(session).save_message(
                        cid, "user", "x", user_id="alice"
                    )
            await other.rollback()
        assert (await state(database, cid)).messages == 0


UNREACHABLE = ["postgresql://postgres@127.0.0.1:9/nothing", "mysql://root@127.0.0.1:9/nothing"]
# Servers that answer, but refuse: no such database.
REFUSING = ["mysql://root@127.0.0.1:3306/convodb_no_such_database"]


@pytest.mark.parametrize("url", UNREACHABLE + REFUSING)
async def test_unreachable_server_raises_store_unavailable(url: str) -> None:
    async with Database(url, connect_timeout=2) as database:
        async with database.session() as session:
            with pytest.raises(StoreUnavailableError):
                await ConversationService(session).get_conversation("c1", "alice")


async def test_ping_passes_on_a_ready_database(db: Database) -> None:
    await db.ping()


async def test_ping_without_the_schema_is_store_unavailable(tmp_path: Path) -> None:
    async with Database(f"sqlite:///{tmp_path / 'empty.db'}") as database:
        with pytest.raises(StoreUnavailableError, match="not ready"):
            await database.ping()


@pytest.mark.parametrize("url", UNREACHABLE + REFUSING)
async def test_ping_of_unreachable_server_is_store_unavailable(url: str) -> None:
    async with Database(url, connect_timeout=2) as database:
        with pytest.raises(StoreUnavailableError):
            await database.ping()


async def test_inside_the_callers_transaction_every_path_joins_it(db: Database) -> None:
    """commit=False: appends, keyed appends and reads all run in the caller's transaction."""
    async with db.session() as session:
        cid = (await ConversationService(session).create_conversation("alice")).id

    with pytest.raises(RuntimeError):
        async with db.session() as session:
            service = ConversationService(session, commit=False)
            await service.save_conversation_messages(
                cid, "alice", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
            )
            await service.save_message(cid, "user", "c", user_id="alice", key="k")
            history = await service.get_conversation_history(cid, "alice")
            assert [m.seq for m in history] == [1, 2, 3]  # the transaction sees its own writes
            window = await service.get_agent_input(cid, "alice", max_tokens=1000)
            assert window.first_seq == 1
            raise RuntimeError("roll it all back")

    assert (await state(db, cid)).messages == 0
    async with db.session() as session:
        service = ConversationService(session, commit=False)
        stored = await service.save_message(cid, "user", "kept", user_id="alice")
    assert stored.seq == 1 and (await state(db, cid)).messages == 1


async def test_a_session_used_for_a_read_then_a_write_keeps_order(db: Database) -> None:
    """The usual request: load the history, then save the turn, in one session."""
    async with db.session() as session:
        service = ConversationService(session)
        cid = (await service.create_conversation("alice")).id
        for turn in range(3):
            history = await service.get_conversation_history(cid, "alice")
            assert len(history) == 2 * turn
            await service.save_conversation_messages(
                cid,
                "alice",
                [{"role": "user", "content": f"q{turn}"}, {"role": "assistant", "content": "a"}],
            )
    assert (await state(db, cid)).last_seq == 6


async def test_session_joined_to_an_external_transaction_never_escapes_it(db: Database) -> None:
    """SQLAlchemy's recipe: a session bound to a connection whose transaction a test (or an
    outer unit of work) rolls back. Nothing the service did may survive the rollback."""
    async with db.session() as session:
        cid = (await ConversationService(session).create_conversation("alice")).id
    async with db.engine.connect() as connection:
        outer = await connection.begin()
        session = AsyncSession(bind=connection, expire_on_commit=False)
        service = ConversationService(session)
        await service.save_conversation_messages(cid, "alice", [{"role": "user", "content": "a"}])
        assert [m.content for m in await service.get_conversation_history(cid, "alice")] == ["a"]
        await session.close()
        await outer.rollback()
    assert (await state(db, cid)).messages == 0


async def test_delete_leaves_no_orphans_even_with_sqlite_foreign_keys_off(tmp_path: Path) -> None:
    """A SQLite engine convodb did not set up has foreign keys off: no ON DELETE CASCADE."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}")
    async with Database(f"sqlite:///{tmp_path / 'plain.db'}") as database:
        await database.create_all()
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            service = ConversationService(session)
            await service.create_conversation("alice", conversation_id="reused")
            await service.save_message("reused", "user", "alice's secret", user_id="alice")
            await service.save_summary("reused", "alice", "a summary", upto_seq=1)
            await service.delete_conversation("reused", "alice")
            await service.create_conversation("bob", conversation_id="reused")
            assert await service.get_conversation_history("reused", "bob") == []
            assert await service.get_summary("reused", "bob") is None
    finally:
        await engine.dispose()


def _append_in_child(db: Database, cid: str) -> None:
    async def work() -> None:
        async with db.session() as session:
            service = ConversationService(session)
            # The hot path (driver connections) and the engine's pool, which the parent used.
            await service.save_message(cid, "user", "from the child", user_id="alice")
            history = await service.get_conversation_history(cid, "alice")
            conversation = await service.get_conversation(cid, "alice")
            await service.update_conversation(cid, "alice", title="renamed by the child")
        assert [m.content for m in history] == ["from the parent", "from the child"]
        assert conversation.last_seq == 2

    asyncio.run(asyncio.wait_for(work(), timeout=30))


async def test_a_forked_worker_uses_the_database_it_inherited(db: Database) -> None:
    # A pre-forking server (gunicorn --preload) forks after the parent used the Database:
    # the child must not wait on the parent's hot-path threads or share its connections.
    async with db.session() as session:
        service = ConversationService(session)
        cid = (await service.create_conversation("alice")).id
        await service.save_message(cid, "user", "from the parent", user_id="alice")
    child = multiprocessing.get_context("fork").Process(target=_append_in_child, args=(db, cid))
    child.start()
    try:
        await asyncio.to_thread(child.join, 60)
        assert child.exitcode == 0
    finally:
        if child.is_alive():  # hung: leave nothing behind
            child.kill()
    # The parent's own connections still work: the child neither used nor closed them.
    for _ in range(3):
        async with db.session() as session:
            service = ConversationService(session)
            history = await asyncio.wait_for(
                service.get_conversation_history(cid, "alice"), timeout=30
            )
            assert [m.content for m in history] == ["from the parent", "from the child"]
            conversation = await asyncio.wait_for(service.get_conversation(cid, "alice"), 30)
            assert conversation.title == "renamed by the child"


async def test_a_clone_has_the_settings_and_connections_of_its_own(database_url: str) -> None:
    original = Database(database_url, statement_timeout=7.5, max_connections=6)
    clone = original.clone()
    try:
        assert (clone.url, clone.timeouts) == (original.url, original.timeouts)
        assert clone.engine is not original.engine
        await clone.create_all()
        async with clone.session() as session:
            made = await ConversationService(session).create_conversation("alice")
        async with original.session() as session:  # the same database
            assert (await ConversationService(session).get_conversation(made.id, "alice")).id
    finally:
        await clone.dispose()
        await original.dispose()
    with pytest.raises(ValueError, match="in-memory"):
        Database("sqlite://").clone()
