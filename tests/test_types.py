"""Column types: every timestamp comes back timezone-aware UTC, whatever wrote it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from convodb._types import DateTimeUTC

MOMENT = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("2030-01-02 03:04:05.678901", MOMENT),  # what convodb writes
        ("2030-01-02 03:04:05", MOMENT.replace(microsecond=0)),  # other tools' rows
        ("2030-01-02T03:04:05.678901", MOMENT),
        ("2030-01-02 03:04:05.678901+00:00", MOMENT),  # not the fast path's format
    ],
)
def test_sqlite_text_reads_back_as_aware_utc(stored: str, expected: datetime) -> None:
    dialect = sqlite.dialect()
    process = DateTimeUTC().dialect_impl(dialect).result_processor(dialect, None)
    assert process is not None
    value = process(stored)
    assert value == expected and value.tzinfo is UTC


def test_sqlite_round_trip_of_what_convodb_writes() -> None:
    dialect = sqlite.dialect()
    impl = DateTimeUTC().dialect_impl(dialect)
    bind, result = impl.bind_processor(dialect), impl.result_processor(dialect, None)
    assert bind is not None and result is not None
    assert result(bind(MOMENT)) == MOMENT


def test_postgresql_values_are_utc_whatever_offset_the_driver_gives() -> None:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    process = DateTimeUTC().dialect_impl(dialect).result_processor(dialect, None)
    assert process is not None
    assert process(MOMENT) is MOMENT  # asyncpg's timestamptz: already UTC, not copied
    plus_two = MOMENT.astimezone(timezone(timedelta(hours=2)))
    converted = process(plus_two)
    assert converted == MOMENT and converted.tzinfo is UTC
    assert process(None) is None
