"""Running convodb's revisions with Alembic, and comparing a database's schema with one.

Imported only when a database is not at the head revision (see ``convodb.migrations``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, MetaData, Table, inspect
from sqlalchemy.engine import Connection

from ..errors import SchemaVersionError
from ..storage import backend_class
from . import BASELINE, HEAD, VERSION_TABLE, ahead_error, classify, select_version

__all__ = [
    "baseline_metadata",
    "convodb_tables",
    "schema_differences",
    "upgrade",
]

_HERE = Path(__file__).resolve().parent


@cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.attributes["connection"] = connection
    return config


def _stamped(connection: Connection) -> str | None:
    """``read_version`` inside a transaction: no statement that can fail."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    return select_version(connection)


def convodb_tables(connection: Connection) -> list[str]:
    """The names of convodb's tables (those of any revision) that the database has."""
    present = set(inspect(connection).get_table_names())
    return sorted(present & _known_table_names())


def upgrade(connection: Connection, *, with_api_keys: bool = False) -> None:
    """Bring the database to the head revision, or raise without touching it.

    Runs on a connection with no transaction, inside ``connection.run_sync``; commits.
    ``with_api_keys``: also create the HTTP service's ``api_keys`` table if it is missing.

    Raises:
        SchemaVersionError: the database has a revision this code does not know, or
            unversioned tables that are not convodb 0.1.0's schema.
    """
    backend = backend_class(connection.dialect)(connection.dialect)
    with backend.migration_transaction(connection):
        _upgrade(connection, with_api_keys)
        violations = backend.integrity_violations(connection)
        if violations:
            raise SchemaVersionError(
                f"the migration would leave rows with no parent: {violations[:5]}",
                current=None,
                head=HEAD,
            )


def _upgrade(connection: Connection, with_api_keys: bool) -> None:
    current = _stamped(connection)
    state = classify(current)
    if state == "unknown":
        raise ahead_error(current)
    config = _config(connection)
    if state == "head":
        pass
    elif current is None and not convodb_tables(connection):
        _create_head_schema(connection)
        command.stamp(config, HEAD)
    else:
        if current is None:
            differences = schema_differences(connection, baseline_metadata())
            if differences:
                raise SchemaVersionError(
                    "the database has convodb tables but no schema version, and they are not "
                    "convodb 0.1.0's schema, the only one without a version; convodb will not "
                    f"guess how to migrate them. Differences: {'; '.join(differences[:10])}",
                    current=None,
                    head=HEAD,
                )
            command.stamp(config, BASELINE)  # verified just now, in this transaction
        command.upgrade(config, HEAD)
    if with_api_keys:
        from .._models import api_keys

        api_keys.create(connection, checkfirst=True)


# -- comparing schemas ---------------------------------------------------------------------


def schema_differences(connection: Connection, metadata: MetaData) -> list[str]:
    """How convodb's tables in the database differ from ``metadata``'s; empty: identical.

    Alembic's autogenerate comparison (tables, columns and their types and nullability,
    server defaults, keys, indexes, unique and foreign-key constraints with their
    ``ON DELETE``), plus the names of check constraints, which it does not compare. Only
    convodb's tables (of any revision) are looked at.
    """
    names = _known_table_names()
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "compare_server_default": True,
            "include_name": lambda name, type_, _parents: type_ != "table" or name in names,
        },
    )
    found = [_describe(diff) for diff in compare_metadata(context, metadata)]
    inspector = inspect(connection)
    present = set(inspector.get_table_names())
    for table in metadata.tables.values():
        if table.name not in present:
            continue
        want = sorted(str(c.name) for c in table.constraints if isinstance(c, CheckConstraint))
        have = sorted(str(c["name"]) for c in inspector.get_check_constraints(table.name))
        if want != have:
            found.append(f"check constraints of {table.name}: {have}, expected {want}")
    return found


def _describe(diff: Any) -> str:
    """One of ``compare_metadata``'s differences in words: what the database lacks
    (``missing``), has besides (``unexpected``), or has otherwise (``differs``)."""
    if isinstance(diff, list):  # a column's modifications: ("modify_type", schema, t, c, ...)
        kinds = ", ".join(d[0].removeprefix("modify_") for d in diff)
        return f"column {diff[0][2]}.{diff[0][3]} differs ({kinds})"
    kind, *rest = diff
    action, _, what = kind.partition("_")
    verdict = {"add": "missing", "remove": "unexpected"}.get(action, kind)
    if what == "column":
        _schema, table, column = rest[:3]
        return f"{verdict} column {table}.{column.name}"
    item = rest[0]
    table = getattr(item, "table", None)
    name = item.name if table is None else f"{item.name} on {table.name}"
    return f"{verdict} {what} {name}"


class _TableCollector:
    """Stands in for ``alembic.op`` to collect the tables a revision creates."""

    def __init__(self) -> None:
        self.metadata = MetaData()

    def create_table(self, name: str, *items: Any, **kw: Any) -> Table:
        return Table(name, self.metadata, *items, **kw)


@cache
def baseline_metadata() -> MetaData:
    """convodb 0.1.0's tables, as the baseline revision creates them."""
    collector = _TableCollector()
    module = _script().get_revision(BASELINE).module
    module.create_tables(collector)
    return collector.metadata


@cache
def _known_table_names() -> frozenset[str]:
    from .._models import tables

    names = {t.name for t in tables(with_api_keys=True)}
    return frozenset(names) | frozenset(baseline_metadata().tables)


def _create_head_schema(connection: Connection) -> None:
    from .._models import tables

    library = tables()
    library[0].metadata.create_all(connection, tables=library, checkfirst=False)
