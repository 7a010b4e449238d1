"""Schema migrations: the revisions equal the models, and convodb 0.1.0's databases upgrade.

- An empty database migrated through every revision has exactly the models' schema, and so
  has one made by ``create_all()`` (compared with Alembic's ``compare_metadata``, as
  procrastinate tests its migrations), on every database.
- Databases made by convodb 0.1.0 (``tests/fixtures``, made by ``make_v0_1_0.py`` with the
  code of 6b5bcac) upgrade in place, and the public API reads back exactly what 0.1.0 read
  (as sqlite-utils tests its migrations on old fixture databases).
- A Database never runs on a mismatched schema: checked once on first use; SQLite upgrades,
  PostgreSQL refuses with an error naming ``convodb db upgrade``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, MetaData, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError

from convodb import ConversationService, Database, SchemaVersionError
from convodb import migrations as migrations_package
from convodb._models import tables
from convodb.migrations import BASELINE, HEAD, VERSION_TABLE
from convodb.migrations._run import baseline_metadata
from convodb.storage._postgresql import MIGRATION_LOCK_KEY
from tests.conftest import empty_postgres_database
from tests.fixtures.make_v0_1_0 import EXPECTED, POSTGRES_FIXTURE, SQLITE_FIXTURE, snapshot

MIGRATIONS = Path(migrations_package.__file__).parent


def _models(*, with_api_keys: bool = True) -> MetaData:
    """convodb's tables alone (``SQLModel.metadata`` may hold other tables too)."""
    metadata = MetaData()
    for table in tables(with_api_keys=with_api_keys):
        table.to_metadata(metadata)
    return metadata


def _drift(connection: Connection, metadata: MetaData) -> list[Any]:
    """What ``compare_metadata`` finds between the database and ``metadata`` (convodb's tables
    only), plus check constraints by name, which autogenerate does not compare."""
    names = {t.name for t in metadata.tables.values()} | {
        t.name for t in tables(with_api_keys=True)
    }
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "compare_server_default": True,
            "include_name": lambda name, type_, _parents: type_ != "table" or name in names,
        },
    )
    found: list[Any] = list(compare_metadata(context, metadata))
    inspector = inspect(connection)
    for table in metadata.tables.values():
        want = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
        have = {c["name"] for c in inspector.get_check_constraints(table.name)}
        if want != have:
            found.append(("check constraints", table.name, have, want))
    return found


async def _run(url: str, work: Any) -> Any:
    """``work(sync connection)`` on a plain connection of a Database of ``url``."""
    async with Database(url) as db, db.engine.connect() as conn:
        result = await conn.run_sync(work)
        await conn.commit()
        return result


def _alembic(connection: Connection, upgrade_to: str | None = None, downgrade_to: str = "") -> None:
    """Run the shipped revisions with Alembic's own commands, on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    if upgrade_to is not None:
        command.upgrade(config, upgrade_to)
    if downgrade_to:
        command.downgrade(config, downgrade_to)


def _version(connection: Connection) -> list[str]:
    if not inspect(connection).has_table(VERSION_TABLE):
        return []
    return list(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


async def _restore_v0_1_0(url: str) -> None:
    """Put convodb 0.1.0's fixture database at ``url`` (an empty database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database is not None
        shutil.copyfile(SQLITE_FIXTURE, parsed.database)
        return
    import asyncpg  # type: ignore[import-untyped]

    # pg_dump's \restrict lines are psql meta-commands (they guard psql itself); no server
    # understands them.
    dump = "\n".join(
        line
        for line in POSTGRES_FIXTURE.read_text().splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict"))
    )
    connection = await asyncpg.connect(
        parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        await connection.execute(dump)
    finally:
        await connection.close()


def _backend(url: str) -> str:
    return make_url(url).get_backend_name()


def _expected(url: str) -> dict[str, Any]:
    expected: dict[str, Any] = json.loads(EXPECTED.read_text())[_backend(url)]
    return expected


# convodb 0.1.0 ran on SQLite and PostgreSQL only: its databases exist on those.
V0_1_0_DATABASES = pytest.mark.parametrize(
    "empty_database_url", ["sqlite", "postgresql"], indirect=True
)


# -- the revisions --------------------------------------------------------------------------


def test_revisions_are_named_and_form_one_line() -> None:
    script = ScriptDirectory(str(MIGRATIONS))
    assert script.get_heads() == [HEAD] == ["langgraph_checkpoints"]
    chain = [r.revision for r in script.walk_revisions("base", "heads")][::-1]
    assert chain == [BASELINE, "content_parts", "message_removal", HEAD]
    for revision in script.walk_revisions():
        assert revision.module.__file__ is not None
        assert Path(revision.module.__file__).stem == revision.revision
        assert re.fullmatch(r"[a-z][a-z0-9_]*", revision.revision), revision.revision
        assert len(revision.revision) <= 32  # the version table's column
    # What a Database reads, without Alembic, to tell an older revision from a newer one's
    assert migrations_package.known_revisions() == {r.revision for r in script.walk_revisions()}


async def test_the_revisions_build_exactly_the_models_schema(empty_database_url: str) -> None:
    def migrate_and_compare(connection: Connection) -> tuple[list[Any], list[str]]:
        _alembic(connection, upgrade_to="head")
        return _drift(connection, _models()), _version(connection)

    drift, version = await _run(empty_database_url, migrate_and_compare)
    assert drift == []
    assert version == [HEAD]


async def test_create_all_builds_the_same_schema_and_stamps_head(empty_database_url: str) -> None:
    async with Database(empty_database_url) as db:
        assert await db.schema_version() == (None, HEAD)
        await db.create_all()
        assert await db.schema_version() == (HEAD, HEAD)
        await db.create_all()  # again: nothing to do
        async with db.engine.connect() as conn:
            # The library's tables only: no api_keys, which is the HTTP service's
            assert await conn.run_sync(_drift, _models(with_api_keys=False)) == []
            assert await conn.run_sync(_version) == [HEAD]
        await db.create_all(api_keys=True)  # as `convodb serve` and `convodb keys` do
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_drift, _models()) == []
            assert await conn.run_sync(_version) == [HEAD]


async def test_downgrading_to_the_baseline_gives_the_baseline_schema(
    empty_database_url: str,
) -> None:
    def down_and_up(connection: Connection) -> tuple[list[Any], list[Any]]:
        _alembic(connection, upgrade_to="head", downgrade_to=BASELINE)
        at_baseline = _drift(connection, baseline_metadata())
        _alembic(connection, upgrade_to="head")
        return at_baseline, _drift(connection, _models())

    assert await _run(empty_database_url, down_and_up) == ([], [])


@V0_1_0_DATABASES
async def test_the_baseline_is_exactly_what_0_1_0_created(empty_database_url: str) -> None:
    await _restore_v0_1_0(empty_database_url)
    assert await _run(empty_database_url, lambda c: _drift(c, baseline_metadata())) == []
    assert await _run(empty_database_url, _version) == []


# -- upgrading convodb 0.1.0's databases, and refusing what is not a known schema ---------------


@V0_1_0_DATABASES
async def test_a_0_1_0_database_upgrades_in_place_with_nothing_lost(
    empty_database_url: str,
) -> None:
    await _restore_v0_1_0(empty_database_url)
    expected = _expected(empty_database_url)
    async with Database(empty_database_url) as db:
        assert await db.schema_version() == (None, HEAD)
        await db.upgrade()
        assert await db.schema_version() == (HEAD, HEAD)
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_drift, _models()) == []

        assert await snapshot(db, expected["tokens"]) == expected["snapshot"]
        verified = expected["snapshot"]["verified"]
        assert sorted(v is None for v in verified.values()) == [False, False, True]

        # The stored keys still work: the keyed batch's retry stores nothing and returns the
        # stored messages; a new message continues the sequence.
        (trip,) = [
            c for c in expected["snapshot"]["users"]["alice"] if c["title"] == "Paris trip ✈"
        ]
        batch = [m for m in trip["messages"] if (m["key"] or "").startswith("batch:")]
        async with db.session() as session:
            service = ConversationService(session)
            retried = await service.save_conversation_messages(
                trip["id"],
                "alice",
                [{"role": m["role"], "content": m["content"]} for m in batch],
                idempotency_key="turn-2",
            )
            assert [(m.id, m.seq) for m in retried] == [(m["id"], m["seq"]) for m in batch]
            again = await service.save_message(
                trip["id"],
                "user",
                "Weather in Paris and Lyon? Réponds en français.",
                user_id="alice",
                key="turn-1-user",
                metadata={"client": {"app": "ios", "build": 412}},
            )
            assert again.seq == 2
            new = await service.save_message(trip["id"], "user", "Thanks!", user_id="alice")
            assert new.seq == trip["last_seq"] + 1


async def test_a_schema_migrated_by_a_newer_convodb_is_refused(empty_database_url: str) -> None:
    async with Database(empty_database_url) as db:
        await db.create_all()
    await _run(
        empty_database_url,
        lambda c: c.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'from_the_future'")),
    )
    async with Database(empty_database_url) as db:
        for attempt in (db.upgrade, db.create_all, db.ping):
            with pytest.raises(SchemaVersionError, match="a newer convodb migrated it") as info:
                await attempt()
            assert info.value.current == "from_the_future"
        async with db.session() as session:
            with pytest.raises(SchemaVersionError, match="newer convodb"):
                await ConversationService(session).list_conversations("alice")


@V0_1_0_DATABASES
async def test_unversioned_tables_that_are_not_0_1_0s_are_refused_untouched(
    empty_database_url: str,
) -> None:
    await _restore_v0_1_0(empty_database_url)
    await _run(
        empty_database_url, lambda c: c.execute(text("DROP INDEX ix_conversations_user_recent"))
    )
    async with Database(empty_database_url) as db:
        with pytest.raises(SchemaVersionError, match="not convodb 0.1.0's schema") as info:
            await db.upgrade()
        assert "ix_conversations_user_recent" in str(info.value)
        async with db.session() as session:  # SQLite's upgrade on first use refuses too
            with pytest.raises(SchemaVersionError):
                await ConversationService(session).list_conversations("alice")
    assert await _run(empty_database_url, _version) == []
    assert (
        await _run(empty_database_url, lambda c: "attachments" in inspect(c).get_table_names())
        is False
    )


# -- upgrade(): no statement timeout, concurrent upgraders, drop_all ------------------------------


async def test_migrations_run_with_no_statement_timeout(postgres_url: str) -> None:
    """The upgrade waits for the migration lock, which another session holds, longer than
    the Database's statement timeout allows one statement (the server's, and asyncpg's own a
    second later), and succeeds."""
    import asyncpg

    async with empty_postgres_database() as url:
        await _restore_v0_1_0(url)
        holder = await asyncpg.connect(
            make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        try:
            await holder.execute(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
            async with Database(url, statement_timeout=0.2) as db:
                upgrade = asyncio.create_task(db.upgrade())
                await asyncio.sleep(1.6)  # past 0.2 s, and past asyncpg's 0.2 + 1 s
                assert not upgrade.done()
                await holder.execute(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
                await asyncio.wait_for(upgrade, timeout=30)
                assert await db.schema_version() == (HEAD, HEAD)
                with pytest.raises(DBAPIError) as info:  # the timeout holds for the rest
                    async with db.engine.connect() as conn:
                        await conn.execute(text("SELECT pg_sleep(1)"))
                assert getattr(info.value.orig, "sqlstate", None) == "57014"  # query_canceled
        finally:
            await holder.close()


async def test_concurrent_upgrades_wait_for_each_other(empty_database_url: str) -> None:
    databases = [Database(empty_database_url) for _ in range(3)]
    try:
        # Open the database once first: on SQLite that switches a new file to WAL, which
        # fails (SQLITE_BUSY) while another connection holds a lock; racing that is not
        # what this test is about.
        await databases[0].schema_version()
        await asyncio.gather(*(db.create_all() for db in databases))
        for db in databases:
            assert await db.schema_version() == (HEAD, HEAD)
    finally:
        for db in databases:
            await db.dispose()


async def test_databases_migrating_at_once_in_one_process_do_not_collide(
    tmp_path: Path,
) -> None:
    """Alembic keeps the running migration in module globals: convodb runs one at a time."""
    urls = []
    for n in range(3):
        shutil.copyfile(SQLITE_FIXTURE, tmp_path / f"{n}.db")
        urls.append(f"sqlite:///{tmp_path / f'{n}.db'}")
    databases = [Database(url) for url in urls]
    try:
        await asyncio.gather(*(db.upgrade() for db in databases))
        for db in databases:
            assert await db.schema_version() == (HEAD, HEAD)
    finally:
        for db in databases:
            await db.dispose()


async def test_drop_all_forgets_the_version(empty_database_url: str) -> None:
    async with Database(empty_database_url) as db:
        await db.create_all()
        await db.drop_all()
        assert await db.schema_version() == (None, HEAD)
        await db.create_all()
        assert await db.schema_version() == (HEAD, HEAD)


# -- the check on first use ---------------------------------------------------------------------


async def test_sqlite_upgrades_a_0_1_0_database_on_first_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    await _restore_v0_1_0(url)
    expected = _expected(url)
    async with Database(url) as db:
        assert await snapshot(db, expected["tokens"]) == expected["snapshot"]
        assert await db.schema_version() == (HEAD, HEAD)


async def test_postgres_refuses_a_schema_behind_the_code_and_names_the_command(
    postgres_url: str,
) -> None:
    async with empty_postgres_database() as url:
        await _restore_v0_1_0(url)
        async with Database(url) as db, db.session() as session:
            service = ConversationService(session)
            for _ in range(2):  # refused on every call until upgraded
                with pytest.raises(SchemaVersionError, match="run `convodb db upgrade`") as info:
                    await service.list_conversations("alice")
                assert info.value.current is None and info.value.head == HEAD
            assert await db.schema_version() == (None, HEAD)  # nothing was touched

            await db.upgrade()
            assert len((await service.list_conversations("alice")).items) == 2

        # A database stamped at an older revision: the error names it.
        async with Database(url) as db:
            await _run(url, lambda c: _alembic(c, downgrade_to=BASELINE))
            with pytest.raises(SchemaVersionError, match=f"at revision '{BASELINE}'") as info:
                await db.ping()
            assert info.value.current == BASELINE


async def test_a_database_without_tables_says_how_to_create_them(
    empty_database_url: str,
) -> None:
    async with Database(empty_database_url) as db, db.session() as session:
        with pytest.raises(SchemaVersionError, match=r"create_all\(\).*`convodb db upgrade`"):
            await ConversationService(session).create_conversation("alice")
    assert await _run(empty_database_url, lambda c: inspect(c).get_table_names()) == []


async def test_the_version_is_read_once_per_database_and_again_after_dispose(
    empty_database_url: str,
) -> None:
    async with Database(empty_database_url) as db:
        await db.create_all()
    reads: list[str] = []
    async with Database(empty_database_url) as db:

        @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
        def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if VERSION_TABLE in statement:
                reads.append(statement)

        async def use() -> None:
            async with db.session() as session:
                service = ConversationService(session)
                cid = (await service.create_conversation("alice")).id
                await service.save_message(cid, "user", "hi", user_id="alice")
                await service.get_conversation_history(cid, "alice")

        await use()
        await use()
        assert len(reads) == 1
        await db.dispose()
        await use()
        assert len(reads) == 2


async def test_a_schema_behind_the_code_is_a_503_naming_the_command(postgres_url: str) -> None:
    from convodb.server import create_app
    from tests._http import make_client, settings

    async with empty_postgres_database() as url:
        await _restore_v0_1_0(url)
        async with Database(url) as db:
            app = create_app(settings(dev=True), database=db)
            async with make_client(app) as client:
                response = await client.get(
                    "/v1/conversations", headers={"X-Convodb-User": "alice"}
                )
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    problem = response.json()
    assert problem["type"] == "urn:convodb:problem:schema-out-of-date"
    assert "convodb db upgrade" in problem["detail"]
