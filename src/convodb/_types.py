"""Column types that absorb dialect differences, so that queries never branch on the dialect.

``DateTimeUTC`` stores timezone-aware UTC on every database: PostgreSQL keeps ``timestamptz``;
SQLite (and MySQL) store a naive UTC value, which this type turns back into an aware one on
the way out, so callers never see a naive datetime.

``JSONType`` is JSONB on PostgreSQL (indexable) and JSON elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["DateTimeUTC", "JSONType", "utcnow"]


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class DateTimeUTC(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python."""

    impl = DateTime(timezone=True)
    cache_ok = True

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

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
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


JSONType: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")
