"""Column types that absorb dialect differences, so that queries never branch on the dialect.

``DateTimeUTC`` stores timezone-aware UTC on every database: PostgreSQL keeps ``timestamptz``;
SQLite (and MySQL) store a naive UTC value, which this type turns back into an aware one on
the way out, so callers never see a naive datetime.

``JSONType`` is JSONB on PostgreSQL (indexable) and JSON elsewhere.
"""

from __future__ import annotations

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
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")
