"""Every statement the database driver receives, whichever path sent it.

convodb runs its hot path on driver connections of its own (or the session's) and the rest
through SQLAlchemy, so the statements are captured at the driver: sqlite3's trace callback
(SQL with values expanded) and asyncpg's query logger (SQL and arguments). On MariaDB the
statements SQLAlchemy runs are seen by its cursor events, and those of the hot path's own
asyncmy connections (which have no query logger with arguments) by a wrapper around them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.util import await_

from convodb import Database
from convodb.storage._mysql import MyConnections


@dataclass(frozen=True)
class Statement:
    sql: str
    """The SQL, whitespace collapsed."""
    limit: int | None
    """The value of its ``LIMIT``, when it has one."""


@asynccontextmanager
async def captured_statements(db: Database) -> AsyncIterator[list[Statement]]:
    """Capture on every connection opened inside the block (the pool is emptied first)."""
    statements: list[Statement] = []
    sqlite = db.dialect_name == "sqlite"
    mysql = db.dialect_name == "mysql"

    def on_sqlite(sql: str) -> None:
        found = re.search(r"LIMIT (\d+)", sql)
        statements.append(Statement(" ".join(sql.split()), int(found[1]) if found else None))

    def on_postgres(sql: str, args: Any) -> None:
        found = re.search(r"LIMIT \$(\d+)", sql)
        limit = int(args[int(found[1]) - 1]) if found else None
        statements.append(Statement(" ".join(sql.split()), limit))

    def on_asyncpg(query: Any) -> None:
        on_postgres(query.query, query.args)

    def on_sqlalchemy(_c: Any, _cur: Any, sql: str, params: Any, *_: Any) -> None:
        if not mysql:
            on_postgres(sql, params)
            return
        on_mysql(sql, params)

    def on_mysql(sql: str, params: Any) -> None:
        found = re.search(r"LIMIT %s", sql)
        limit = int(params[sql[: found.start()].count("%s")]) if found else None
        statements.append(Statement(" ".join(sql.split()), limit))

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        driver = dbapi_connection.driver_connection
        if mysql:
            return
        if sqlite:
            await_(driver.set_trace_callback(on_sqlite))
        else:
            driver.add_query_logger(on_asyncpg)

    def on_driver_connect(driver: Any) -> None:  # the hot path's own connections
        if sqlite:
            driver.set_trace_callback(on_sqlite)
        else:
            driver.add_query_logger(on_asyncpg)

    own = db._connections  # see convodb.storage
    await db.dispose()
    if isinstance(own, MyConnections):
        own.connection = _traced(own.connection, on_mysql)  # type: ignore[method-assign]
    elif own is not None:
        own.on_connect.append(on_driver_connect)
    event.listen(db.engine.sync_engine, "connect", on_connect)
    if not sqlite:
        event.listen(db.engine.sync_engine, "before_cursor_execute", on_sqlalchemy)
    try:
        yield statements
    finally:
        event.remove(db.engine.sync_engine, "connect", on_connect)
        if not sqlite:
            event.remove(db.engine.sync_engine, "before_cursor_execute", on_sqlalchemy)
        if isinstance(own, MyConnections):
            del own.connection  # the class's own again
        elif own is not None:
            own.on_connect.remove(on_driver_connect)
        await db.dispose()


def _traced(connection: Any, record: Callable[[str, Any], None]) -> Any:
    """``MyConnections.connection`` whose connections report each statement they run."""

    @asynccontextmanager
    async def traced() -> AsyncIterator[Any]:
        async with connection() as driver:
            yield _Traced(driver, record)

    return traced


class _Traced:
    """An asyncmy connection or cursor that reports ``execute``/``executemany``."""

    def __init__(self, inner: Any, record: Callable[[str, Any], None]) -> None:
        self._inner, self._record = inner, record

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def cursor(self, *args: Any) -> _Traced:
        return _Traced(self._inner.cursor(*args), self._record)

    async def __aenter__(self) -> _Traced:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._inner.__aexit__(*exc)

    async def execute(self, sql: str, args: Any = None) -> Any:
        self._record(sql, args)
        return await self._inner.execute(sql, args)

    async def executemany(self, sql: str, args: Any) -> Any:
        self._record(sql, args[0] if args else ())
        return await self._inner.executemany(sql, args)
