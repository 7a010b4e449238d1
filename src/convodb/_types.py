"""Column types that absorb dialect differences, so that queries never branch on the dialect.

``DateTimeUTC`` stores timezone-aware UTC on every database: PostgreSQL keeps ``timestamptz``;
SQLite (and MySQL) store a naive UTC value, which this type turns back into an aware one on
the way out, so callers never see a naive datetime.

``JSONType`` is JSONB on PostgreSQL (indexable), JSON text on MySQL and MariaDB (see
``_JSONText``) and JSON elsewhere.

MySQL and MariaDB need wider types than SQLAlchemy's defaults: ``TEXT`` holds 64 KiB, under
the 1 MiB message limit (``LongText`` is ``MEDIUMTEXT`` there, 16 MiB), ``BLOB`` 64 KiB
(``Blob`` is ``LONGBLOB``), and ``DATETIME`` drops microseconds (``DATETIME(6)``). Elsewhere
they are the plain types. ``MYSQL_TABLE_OPTIONS`` makes every table utf8mb4 with the binary,
no-pad collation: the default (``utf8mb4_general_ci``) would compare ids and keys case-,
accent- and emoji-insensitively, and ``utf8mb4_bin`` ignores trailing spaces.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, LargeBinary, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["MYSQL_TABLE_OPTIONS", "Blob", "DateTimeUTC", "JSONType", "LongText", "utcnow"]

_MYSQL = ("mysql", "mariadb")


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class DateTimeUTC(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in _MYSQL:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: convodb stores timezone-aware UTC only")
        value = value.astimezone(UTC)
        # Only PostgreSQL keeps the offset; elsewhere store naive UTC so that text comparison
        # (SQLite) and DATETIME columns (MySQL) order correctly.
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is UTC:  # asyncpg's timestamptz
            return value
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # SQLite stores text: SQLAlchemy's processor formats it field by field after
        # process_bind_param; isoformat writes the same text (six digits of microseconds
        # always) in one call.
        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError(
                    f"naive datetime {value!r}: convodb stores timezone-aware UTC only"
                )
            if value.tzinfo is not UTC:
                value = value.astimezone(UTC)
            return value.isoformat(" ", "microseconds")[:-6]  # without "+00:00"

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name in _MYSQL:
            # asyncmy hands back naive datetimes: attach UTC, without TypeDecorator's chain
            # around it (a history row has one per message).
            def aware(value: datetime | None) -> datetime | None:
                if value is None or value.tzinfo is not None:
                    return value
                # combine: a quarter of replace(tzinfo=UTC)'s cost, same value
                return datetime.combine(value.date(), value.time(), UTC)

            return aware
        if dialect.name == "postgresql" and dialect.driver == "asyncpg":
            # asyncpg hands back timestamptz values aware, in UTC (datetime.UTC) already:
            # process_result_value would return each as it is.
            return None
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        # SQLite hands back the stored text; SQLAlchemy's processor parses it with a regex and
        # process_result_value then copies it to attach UTC: ~1.7 us a value, most of a
        # history row's decoding. fromisoformat with the offset appended does both in 0.1 us.
        fallback = super().result_processor(dialect, coltype)

        def process(value: Any) -> datetime | None:
            if isinstance(value, str):
                try:
                    return datetime.fromisoformat(value + "+00:00")
                except ValueError:  # not the format convodb writes (another tool's rows)
                    pass
            return fallback(value) if fallback is not None else value

        return process


class _JSONText(TypeDecorator[Any]):
    """JSON kept as text, for MySQL and MariaDB. MariaDB's ``JSON`` is ``LONGTEXT`` with a
    ``json_valid`` check that refuses objects nested deeper than 32 levels, under what
    ``Limits.max_json_depth`` allows; convodb validates JSON before it stores it anyway."""

    impl = mysql.LONGTEXT()
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        # Most metadata is {}: a new empty dict without the parser, and no TypeDecorator
        # chain around it (a history row has two JSON columns per message).
        loads = json.loads

        def process(value: Any) -> Any:
            if value is None:
                return None
            return {} if value == "{}" else loads(value)

        return process


JSONType: TypeEngine[Any] = (
    JSON().with_variant(JSONB(), "postgresql").with_variant(_JSONText(), *_MYSQL)
)
LongText: TypeEngine[str] = Text().with_variant(mysql.MEDIUMTEXT(), *_MYSQL)
Blob: TypeEngine[bytes] = LargeBinary().with_variant(mysql.LONGBLOB(), *_MYSQL)
MYSQL_TABLE_OPTIONS: dict[str, str] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_nopad_bin",
}
"""Table options for MySQL and MariaDB (other databases ignore them)."""
