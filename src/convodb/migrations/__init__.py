"""The schema's history: Alembic revisions shipped in the package, and how convodb runs them.

The models (``convodb._models``) are the schema; every change to them comes with a revision in
``versions/`` that makes the same change, and ``tests/test_migrations.py`` proves that an empty
database migrated to the head revision equals the models, on every database.

Revisions are named, never numbered by position: a revision file ``versions/<name>.py``
declares ``revision = "<name>"`` and ``down_revision = "<the previous head>"``. Write its
operations out explicitly (``op.create_table``, ``op.batch_alter_table``), never by importing
the models, which will have changed by the time an old database runs it. Batch operations
keep a revision portable: on SQLite, which cannot alter most things in place, they copy the
table; elsewhere they are plain ``ALTER TABLE``.

How a database is brought to the head revision (``_run.upgrade``), in one transaction that
also serializes concurrent upgraders (see ``_run._LOCKS``):

- empty (none of convodb's tables): the models' tables are created and stamped with the head
  revision;
- versioned (convodb's version table names a revision): the revisions after it run;
- tables but no version: convodb 0.1.0 made it, which had no migrations. When its tables are
  exactly 0.1.0's schema (the baseline revision's), it is adopted at the baseline and
  upgraded; otherwise nothing is touched and :class:`SchemaVersionError` lists the
  differences. convodb never stamps a schema it has not verified.

A revision the code does not know means a newer convodb migrated the database: refused.

convodb keeps its version in its own table, ``convodb_alembic_version``, so that an
application with its own Alembic migrations can share the database.

This module is what a ``Database`` needs on every open: reading the version and telling it
from :data:`HEAD`, without importing Alembic (a tenth of a second at start-up). Running the
revisions and comparing schemas live in ``convodb.migrations._run``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from sqlalchemy import Column, MetaData, String, Table, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ..errors import SchemaVersionError

__all__ = [
    "BASELINE",
    "HEAD",
    "VERSION_TABLE",
    "ahead_error",
    "behind_error",
    "classify",
    "known_revisions",
    "no_schema_error",
    "read_version",
    "version_table",
]

HEAD = "langgraph_checkpoints"
"""The newest revision: the schema this code needs. A new revision updates it (a test checks
that it is the head of ``versions/``)."""
BASELINE = "baseline_0_1_0"
"""The revision whose schema is convodb 0.1.0's, which made no version table."""
VERSION_TABLE = "convodb_alembic_version"
"""Where convodb's revision is stamped (Alembic's ``version_table``)."""
_VERSIONS = Path(__file__).resolve().parent / "versions"

version_table = Table(
    VERSION_TABLE, MetaData(), Column("version_num", String(32), primary_key=True)
)


def classify(current: str | None) -> str:
    """``"head"``, ``"behind"`` (a revision before the head) or ``"unknown"`` (newer code
    migrated it), for a stamped revision; ``None`` (no version) is ``"behind"``."""
    if current == HEAD:
        return "head"
    if current is None:
        return "behind"
    return "behind" if current in known_revisions() else "unknown"


@cache
def known_revisions() -> frozenset[str]:
    """Every revision this code has: the names of ``versions/*.py`` (a revision file is named
    after its revision, which a test checks), read without importing Alembic."""
    return frozenset(path.stem for path in _VERSIONS.glob("*.py") if not path.stem.startswith("_"))


def read_version(connection: Connection) -> str | None:
    """The revision stamped in the database; ``None`` when it has no version table.

    One SELECT when the table exists. Its absence is confirmed by the inspector, not read
    from the error message; the failed statement is rolled back, so call this outside a
    transaction that matters.
    """
    try:
        return select_version(connection)
    except DBAPIError:
        connection.rollback()  # PostgreSQL aborts the transaction of a failed statement
        if inspect(connection).has_table(VERSION_TABLE):
            raise
        return None


def select_version(connection: Connection) -> str | None:
    rows = connection.execute(select(version_table.c.version_num)).scalars().all()
    return " ".join(sorted(rows)) or None  # more than one row: not a version of convodb's


def behind_error(current: str | None) -> SchemaVersionError:
    at = (
        "has no schema version (convodb 0.1.0 made it)"
        if current is None
        else f"is at revision {current!r}"
    )
    return SchemaVersionError(
        f"the database schema {at} and this convodb needs {HEAD!r}: run `convodb db upgrade` "
        "(or `await Database.upgrade()`) to migrate it",
        current=current,
        head=HEAD,
    )


def ahead_error(current: str | None) -> SchemaVersionError:
    return SchemaVersionError(
        f"the database schema is at revision {current!r}, which this convodb does not know "
        f"(its newest is {HEAD!r}): a newer convodb migrated it; upgrade convodb to use it",
        current=current,
        head=HEAD,
    )


def no_schema_error() -> SchemaVersionError:
    return SchemaVersionError(
        "the database has no convodb tables: call `await Database.create_all()` or run "
        "`convodb db upgrade` to create them",
        current=None,
        head=HEAD,
    )
