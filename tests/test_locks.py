"""Waiting on a lock ends, on every database, as a StoreBusyError that stores nothing; the
driver's error codes for "busy" and "unreachable" are read by number, never by text."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from convodb import (
    ConversationService,
    Database,
    StoreBusyError,
    StoreUnavailableError,
)
from convodb.storage import translate_error

from ._store import state

ALICE = "alice"


def _impatient(url: str) -> Database:
    """A Database on the same database that waits one second on a lock."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":  # SQLite waits its busy timeout instead
        return Database(parsed.update_query_dict({"timeout": "1"}))
    return Database(url, statement_timeout=1)


async def test_a_write_waiting_on_a_lock_past_the_timeout_is_busy_and_stores_nothing(
    database_url: str, db: Database
) -> None:
    async with db.session() as session:
        cid = (await ConversationService(session).create_conversation(ALICE)).id
    async with db.session() as holder:
        # An open transaction that appended: it holds the conversation's lock until it ends.
        await ConversationService(holder, commit=False).save_message(
            cid, "user", "first", user_id=ALICE
        )
        impatient = _impatient(database_url)
        try:
            async with impatient.session() as session:
                with pytest.raises(StoreBusyError):
                    await ConversationService(session).save_message(
                        cid, "user", "second", user_id=ALICE
                    )
        finally:
            await impatient.dispose()
        await holder.rollback()
    assert (await state(db, cid)).messages == 0


def _mysql_error(code: int) -> BaseException:
    from asyncmy.errors import InterfaceError, OperationalError

    return InterfaceError(0, "Not connected") if code == 0 else OperationalError(code, "...")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (1213, StoreBusyError),  # deadlock
        (1205, StoreBusyError),  # lock wait timeout
        (1969, StoreBusyError),  # MariaDB max_statement_time
        (3024, StoreBusyError),  # MySQL max_execution_time
        (2006, StoreUnavailableError),  # server has gone away
        (2013, StoreUnavailableError),  # lost connection during a query
        (2003, StoreUnavailableError),  # cannot connect
        (1040, StoreUnavailableError),  # too many connections
        (0, StoreUnavailableError),  # the driver's "Not connected"
    ],
)
def test_mysql_errors_are_classified_by_number(code: int, expected: type[BaseException]) -> None:
    assert isinstance(translate_error(_mysql_error(code)), expected)


def test_other_mysql_errors_are_bugs_to_surface() -> None:
    from asyncmy.errors import IntegrityError, ProgrammingError

    assert translate_error(IntegrityError(1062, "Duplicate entry")) is None
    assert translate_error(ProgrammingError(1064, "You have an error in your SQL")) is None
