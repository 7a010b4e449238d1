"""The stores under test, behind one small interface: the yardsticks (``raw``, ``limit``) and
``convodb``.

``raw`` is the fastest correct code a person would write for each operation, by hand on the
bare driver, on convodb's own schema (so that the two differ in code, not in tables): long-lived
connections (a queue of them, cheaper per checkout than the drivers' pools) or, on SQLite,
threads of its own; prepared statements; the columns convodb returns, decoded as a correct store
must (JSON, aware UTC timestamps); the ownership check in the same statement. The alternatives
measured for each database, and the figures that chose these, are in ``raw_alternatives.py``
and ``results/raw-alternatives.md``.

- PostgreSQL: one statement per append, a data-modifying CTE that bumps ``last_seq`` (the row
  lock that orders concurrent appends) and inserts the batch with the reserved ``seq`` values;
  one round trip, autocommit, prepared once per connection by asyncpg's statement cache.
- SQLite: plain ``sqlite3`` connections on threads of their own (one writer, a few readers);
  an append is ``BEGIN IMMEDIATE``, ``UPDATE conversations ... RETURNING last_seq``, one
  INSERT, COMMIT, all in one thread hop (SQLite has no data-modifying CTE; in-process statements
  cost no round trip, but every hop to a thread does).
- MariaDB: ``UPDATE conversations SET last_seq = LAST_INSERT_ID(last_seq + n) ...`` (the row
  lock; the new ``last_seq`` comes back in the OK packet as ``lastrowid``, the affected-row
  count says whether the conversation is the user's), one INSERT of the batch (a bulk
  ``executemany`` of a prepared statement), COMMIT: three round trips, as MariaDB has neither
  ``UPDATE ... RETURNING`` nor a data-modifying CTE. Reads run on autocommit connections: one
  round trip.
- latest-N: ``WHERE conversation_id = ? AND EXISTS (owned) ORDER BY seq DESC LIMIT n``, an
  index range scan of the primary key with the ownership check in the same statement.

``limit`` is the physical limit of a read: latest-50 of ``role, content`` only, without the
ownership check, on the same connections as ``raw``. It only reads; the write workloads show
"-" for it.

``convodb`` goes through the public API only (``from convodb import ...``), a session per
operation, as a stateless worker uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import queue
import sqlite3
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from ._data import USER, Target, asyncmy, asyncpg, load_core, mariadb_connect_args

T = TypeVar("T")

Msg = tuple[str, str, int]
"""role, content, token estimate"""

POOL_SIZE = 22
"""Connections per store: the 20 concurrent writers, the following reader, one spare. The
peers' pools keep few idle connections (``IDLE``) so that every store's stays under
PostgreSQL's default ``max_connections`` of 100, shared with whoever else uses the server."""
IDLE = 4
PAGE = 1000


class Store:
    """One store on one fresh database."""

    name = "?"
    group = ""
    """Stores of the same group share a schema, hence one loaded database."""
    follow_mode = "incremental"
    """``incremental``: ``follow`` returns what is new after a cursor. ``snapshot``: it returns
    the whole conversation (the store has no "after" read)."""
    dialects: tuple[str, ...] = ("sqlite", "postgresql")
    writes = True
    """False: a read-only yardstick (``limit``); the write workloads skip it."""
    per_request = False
    """True: a peer's per-request usage (a new handle per call); the quick run leaves it out
    unless asked for."""

    def __init__(self, target: Target) -> None:
        self.target = target

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def warm(self, cids: Sequence[str]) -> None:
        """After the bulk load, before any workload: set up what a long-lived user of the
        store holds for these conversations (a peer's per-conversation handles)."""

    async def create(self, cid: str) -> None:
        raise NotImplementedError

    async def append(self, cid: str, msgs: Sequence[Msg]) -> None:
        raise NotImplementedError

    async def latest(self, cid: str, n: int) -> list[str]:
        raise NotImplementedError

    async def read_all(self, cid: str) -> list[str]:
        raise NotImplementedError

    async def follow(self, cid: str, cursor: Any) -> tuple[list[str], Any]:
        return await self.read_all(cid), None

    async def window(self, cid: str, max_tokens: int) -> int | None:
        """Messages in a token-budget window of the newest history; ``None``: not offered."""
        return None

    async def bulk_load(self, conversations: Sequence[tuple[str, int]], first: int) -> None:
        raise NotImplementedError


# -- plumbing shared by the raw stores ---------------------------------------------------------


def _json(value: str) -> Any:
    """JSON text decoded; ``{}`` (every benchmark row's metadata) without the parser."""
    return {} if value == "{}" else json.loads(value)


class _Connections:
    """Long-lived driver connections, most recently used first, opened on demand up to ``size``.

    :meth:`get` takes one (waiting when all are in use), :meth:`put` gives it back, :meth:`drop`
    closes one that saw an error (it may be mid-protocol or inside a transaction). Idle
    connections stay open until :meth:`close`, as convodb's own pools keep theirs for minutes:
    the drivers' pools cost more per checkout than this (asyncpg's ``Pool`` a task per release
    and a timeout per acquire; ``results/raw-alternatives.md`` has the figures).
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        terminate: Callable[[Any], Any],
        close: Callable[[Any], Awaitable[Any]],
        size: int,
    ) -> None:
        self._connect, self._terminate, self._close, self._size = connect, terminate, close, size
        self._idle: asyncio.LifoQueue[Any] = asyncio.LifoQueue()
        self._opened = 0

    async def get(self) -> Any:
        if self._idle.empty() and self._opened < self._size:
            self._opened += 1
            try:
                return await self._connect()
            except BaseException:
                self._opened -= 1
                raise
        return await self._idle.get()

    def put(self, conn: Any) -> None:
        self._idle.put_nowait(conn)

    def drop(self, conn: Any) -> None:
        self._opened -= 1
        self._terminate(conn)

    async def close(self) -> None:
        while not self._idle.empty():
            self._opened -= 1
            await self._close(self._idle.get_nowait())


# -- raw: PostgreSQL --------------------------------------------------------------------------

_PG_APPEND = """
WITH c AS (
    UPDATE conversations SET last_seq = last_seq + $3, updated_at = $4
    WHERE id = $1 AND user_id = $2
    RETURNING last_seq
)
INSERT INTO messages (conversation_id, seq, id, role, content, metadata, token_count, created_at)
SELECT $1, c.last_seq - $3 + m.ord, m.id, m.role, m.content, '{}'::jsonb, m.tokens, $4
FROM c, unnest($5::text[], $6::text[], $7::text[], $8::int[])
    WITH ORDINALITY AS m(id, role, content, tokens, ord)
RETURNING seq
"""
_COLUMNS = (
    "seq, id, role, content, tool_calls, tool_name, tool_call_id, metadata, key, token_count, "
    "created_at, parts"
)
"""The columns convodb's latest-N returns (in an order of the raw stores' own), but for
``conversation_id``: it is the statement's parameter, equal to the stored value byte for byte
under the WHERE clause (binary or deterministic collations), so the rows carry the parameter
instead of reading it back. On MariaDB the 50 rows of latest-50 sit near the server's 16 KB net
buffer, and crossing it costs ~50 us (``results/raw-alternatives.md``)."""
_PG_LATEST = f"""
SELECT {_COLUMNS} FROM messages
WHERE conversation_id = $1
  AND EXISTS (SELECT 1 FROM conversations WHERE id = $1 AND user_id = $2)
ORDER BY seq DESC LIMIT $3
"""
_PG_AFTER = """
SELECT seq, content FROM messages
WHERE conversation_id = $1 AND seq > $3
  AND EXISTS (SELECT 1 FROM conversations WHERE id = $1 AND user_id = $2)
ORDER BY seq LIMIT $4
"""
_PG_BEFORE = """
SELECT seq, content, token_count FROM messages
WHERE conversation_id = $1 AND seq < $3
  AND EXISTS (SELECT 1 FROM conversations WHERE id = $1 AND user_id = $2)
ORDER BY seq DESC LIMIT $4
"""
_PG_LIMIT = (
    "SELECT role, content FROM messages WHERE conversation_id = $1 ORDER BY seq DESC LIMIT $2"
)


class ConversationMissing(LookupError):
    pass


async def _pg_connect(dsn: str) -> Any:
    conn = await asyncpg().connect(dsn)
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=_json, schema="pg_catalog")
    return conn


async def _pg_close(conn: Any) -> None:
    await conn.close()


def _pg_terminate(conn: Any) -> None:
    conn.terminate()


class RawPostgres(Store):
    """asyncpg connections in ``_Connections``, statements prepared once per connection by
    asyncpg's statement cache, autocommit: every operation is one statement, one round trip."""

    name, group, dialects = "raw", "core", ("postgresql",)

    async def open(self) -> None:
        self._conns = _Connections(
            lambda: _pg_connect(self.target.dsn), _pg_terminate, _pg_close, POOL_SIZE
        )

    async def close(self) -> None:
        await self._conns.close()

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        conn = await self._conns.get()
        try:
            rows = await conn.fetch(sql, *args)
        except BaseException:
            self._conns.drop(conn)
            raise
        self._conns.put(conn)
        return rows  # type: ignore[no-any-return]

    async def create(self, cid: str) -> None:
        now = datetime.now(UTC)
        await self._fetch(
            "INSERT INTO conversations (id, user_id, metadata, last_seq, created_at, updated_at)"
            " VALUES ($1, $2, '{}', 0, $3, $3)",
            cid,
            USER,
            now,
        )

    async def append(self, cid: str, msgs: Sequence[Msg]) -> None:
        rows = await self._fetch(
            _PG_APPEND,
            cid,
            USER,
            len(msgs),
            datetime.now(UTC),
            [str(uuid.uuid4()) for _ in msgs],
            [m[0] for m in msgs],
            [m[1] for m in msgs],
            [m[2] for m in msgs],
        )
        if not rows:
            raise ConversationMissing(cid)

    async def latest(self, cid: str, n: int) -> list[str]:
        # asyncpg decodes as it reads: jsonb through the codec, timestamptz to aware datetimes.
        rows = await self._fetch(_PG_LATEST, cid, USER, n)
        return [r[3] for r in reversed(rows)]

    async def read_all(self, cid: str) -> list[str]:
        out: list[str] = []
        cursor = 0
        while True:
            items, cursor = await self.follow(cid, cursor)
            if not items:
                return out
            out.extend(items)

    async def follow(self, cid: str, cursor: Any) -> tuple[list[str], Any]:
        rows = await self._fetch(_PG_AFTER, cid, USER, cursor or 0, PAGE)
        return [r[1] for r in rows], (rows[-1][0] if rows else cursor)

    async def window(self, cid: str, max_tokens: int) -> int | None:
        kept, used, before = 0, 0, 2**62
        while True:
            rows = await self._fetch(_PG_BEFORE, cid, USER, before, 100)
            for _seq, content, tokens in rows:
                used += tokens or tokens_estimate(content)
                if used > max_tokens:
                    return kept
                kept += 1
            if len(rows) < 100:
                return kept
            before = rows[-1][0]

    async def bulk_load(self, conversations: Sequence[tuple[str, int]], first: int) -> None:
        await load_core(self.target, conversations, first_message=first)


class LimitPostgres(RawPostgres):
    """The physical limit of latest-50: ``role, content`` only, no ownership check."""

    name, writes = "limit", False

    async def latest(self, cid: str, n: int) -> list[str]:
        rows = await self._fetch(_PG_LIMIT, cid, n)
        return [r[1] for r in reversed(rows)]

    async def window(self, cid: str, max_tokens: int) -> int | None:
        return None


def tokens_estimate(text: str | None) -> int:
    return max(1, len(text or "") // 4)


# -- raw: SQLite ------------------------------------------------------------------------------

SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON")
"""convodb's connection set-up on SQLite, so that both run on the same terms."""
SQLITE_READERS = 2
"""Reader threads: a second one lets the concurrent writers' follower overlap a reader."""

_SQ_BUMP = (
    "UPDATE conversations SET last_seq = last_seq + ?, updated_at = ? "
    "WHERE id = ? AND user_id = ? RETURNING last_seq"
)
_SQ_INSERT = (
    "INSERT INTO messages (conversation_id, seq, id, role, content, metadata, token_count,"
    " created_at) VALUES (?, ?, ?, ?, ?, '{}', ?, ?)"
)
_SQ_LATEST = f"""
SELECT {_COLUMNS} FROM messages
WHERE conversation_id = ?1
  AND EXISTS (SELECT 1 FROM conversations WHERE id = ?1 AND user_id = ?2)
ORDER BY seq DESC LIMIT ?3
"""
_SQ_AFTER = """
SELECT seq, content FROM messages
WHERE conversation_id = ?1 AND seq > ?3
  AND EXISTS (SELECT 1 FROM conversations WHERE id = ?1 AND user_id = ?2)
ORDER BY seq LIMIT ?4
"""
_SQ_BEFORE = """
SELECT seq, content, token_count FROM messages
WHERE conversation_id = ?1 AND seq < ?3
  AND EXISTS (SELECT 1 FROM conversations WHERE id = ?1 AND user_id = ?2)
ORDER BY seq DESC LIMIT ?4
"""
_SQ_LIMIT = "SELECT role, content FROM messages WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?"


def _sqlite_now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _decode_sqlite_row(row: Sequence[Any], cid: str) -> tuple[Any, ...]:
    """What a correct store hands back: JSON decoded, timestamps aware UTC."""
    seq, id_, role, content, calls, name, call_id, metadata, key, tokens, at, parts = row
    return (
        seq,
        id_,
        role,
        content,
        json.loads(calls) if calls else None,
        name,
        call_id,
        _json(metadata),
        key,
        tokens,
        datetime.fromisoformat(at + "+00:00"),  # stored naive UTC; aware in one call
        cid,
        json.loads(parts) if parts else None,
    )


def _sqlite_connect(path: str) -> sqlite3.Connection:
    """Autocommit mode: an operation begins and ends its own transaction."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    for pragma in SQLITE_PRAGMAS:
        conn.execute(pragma)
    return conn


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _SqliteThreads:
    """``count`` threads, each with a ``sqlite3`` connection and a queue of its own: a whole
    operation (its statements and the decoding of its rows) runs in one hop, a queue put and a
    ``call_soon_threadsafe`` back. Work goes to the first idle thread, so sequential calls all
    find the same one (threads sharing one queue cost 25-40 us more per read here: see
    ``results/raw-alternatives.md``). Work that fails inside a transaction is rolled back
    before the thread takes the next."""

    def __init__(self, path: str, count: int) -> None:
        self._queues: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in range(count)]
        self._busy = [0] * count
        self._threads = [
            threading.Thread(target=_sqlite_serve, args=(path, q), daemon=True)
            for q in self._queues
        ]
        for thread in self._threads:
            thread.start()

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        busy = self._busy
        i = busy.index(min(busy))
        busy[i] += 1
        try:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[T] = loop.create_future()
            self._queues[i].put((loop, future, work))
            return await future
        finally:
            busy[i] -= 1

    def stop(self) -> None:
        for work_queue in self._queues:
            work_queue.put(None)
        for thread in self._threads:
            thread.join()


def _sqlite_serve(path: str, work_queue: queue.SimpleQueue[Any]) -> None:
    conn: sqlite3.Connection | None = None
    failure: BaseException | None = None
    try:
        conn = _sqlite_connect(path)
    except Exception as exc:  # handed to every caller
        failure = exc
    try:
        while (item := work_queue.get()) is not None:
            loop, future, work = item
            result, error = None, failure
            if conn is not None:
                try:
                    result = work(conn)
                except BaseException as exc:  # handed to the caller
                    error = exc
                    if conn.in_transaction:
                        conn.rollback()
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(_settle, future, result, error)
    finally:
        if conn is not None:
            conn.close()


class RawSqlite(Store):
    """Plain ``sqlite3`` on threads of its own: one writer thread (in-process appends queue on
    it instead of polling SQLite's lock) and ``SQLITE_READERS`` reader threads; an append
    (``BEGIN IMMEDIATE``, the bump, the INSERT, COMMIT) or a read and its decoding is one
    thread hop. ``sqlite3`` keeps each connection's statements prepared (its statement cache)."""

    name, group, dialects = "raw", "core", ("sqlite",)

    async def open(self) -> None:
        self._writer = _SqliteThreads(self.target.path, 1)
        self._readers = _SqliteThreads(self.target.path, SQLITE_READERS)

    async def close(self) -> None:
        await asyncio.to_thread(self._writer.stop)
        await asyncio.to_thread(self._readers.stop)

    async def create(self, cid: str) -> None:
        now = _sqlite_now()

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO conversations (id, user_id, metadata, last_seq, created_at, "
                "updated_at) VALUES (?, ?, '{}', 0, ?, ?)",
                (cid, USER, now, now),
            )

        await self._writer.run(insert)

    async def append(self, cid: str, msgs: Sequence[Msg]) -> None:
        now, count = _sqlite_now(), len(msgs)
        ids = [str(uuid.uuid4()) for _ in msgs]

        def append(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            bumped = conn.execute(_SQ_BUMP, (count, now, cid, USER)).fetchall()
            if not bumped:
                conn.rollback()
                return False
            first = bumped[0][0] - count + 1
            rows = [
                (cid, first + i, ids[i], role, content, tokens, now)
                for i, (role, content, tokens) in enumerate(msgs)
            ]
            if count == 1:
                conn.execute(_SQ_INSERT, rows[0])
            else:
                conn.executemany(_SQ_INSERT, rows)
            conn.commit()
            return True

        if not await self._writer.run(append):
            raise ConversationMissing(cid)

    async def latest(self, cid: str, n: int) -> list[str]:
        def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            rows = conn.execute(_SQ_LATEST, (cid, USER, n)).fetchall()
            return [_decode_sqlite_row(r, cid) for r in rows]

        return [r[3] for r in reversed(await self._readers.run(read))]

    async def read_all(self, cid: str) -> list[str]:
        out: list[str] = []
        cursor = 0
        while True:
            items, cursor = await self.follow(cid, cursor)
            if not items:
                return out
            out.extend(items)

    async def follow(self, cid: str, cursor: Any) -> tuple[list[str], Any]:
        def read(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(_SQ_AFTER, (cid, USER, cursor or 0, PAGE)).fetchall()

        rows = await self._readers.run(read)
        return [r[1] for r in rows], (rows[-1][0] if rows else cursor)

    async def window(self, cid: str, max_tokens: int) -> int | None:
        def read(conn: sqlite3.Connection) -> int:
            kept, used, before = 0, 0, 2**62
            while True:
                rows = conn.execute(_SQ_BEFORE, (cid, USER, before, 100)).fetchall()
                for _seq, content, tokens in rows:
                    used += tokens or tokens_estimate(content)
                    if used > max_tokens:
                        return kept
                    kept += 1
                if len(rows) < 100:
                    return kept
                before = rows[-1][0]

        return await self._readers.run(read)

    async def bulk_load(self, conversations: Sequence[tuple[str, int]], first: int) -> None:
        await load_core(self.target, conversations, first_message=first)


class LimitSqlite(RawSqlite):
    """The physical limit of latest-50: ``role, content`` only, no ownership check."""

    name, writes = "limit", False

    async def latest(self, cid: str, n: int) -> list[str]:
        def read(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(_SQ_LIMIT, (cid, n)).fetchall()

        return [r[1] for r in reversed(await self._readers.run(read))]

    async def window(self, cid: str, max_tokens: int) -> int | None:
        return None


# -- raw: MariaDB ----------------------------------------------------------------------------

_MY_BUMP = (
    "UPDATE conversations SET last_seq = LAST_INSERT_ID(last_seq + %s), updated_at = %s "
    "WHERE id = %s AND user_id = %s"
)
_MY_INSERT = (
    "INSERT INTO messages (conversation_id, seq, id, role, content, metadata, token_count,"
    " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
_MY_COLUMNS = _COLUMNS.replace(" key,", " `key`,")  # KEY is a reserved word in MySQL
_MY_LATEST = f"""
SELECT {_MY_COLUMNS} FROM messages
WHERE conversation_id = %s
  AND EXISTS (SELECT 1 FROM conversations WHERE id = %s AND user_id = %s)
ORDER BY seq DESC LIMIT %s
"""
_MY_AFTER = """
SELECT seq, content FROM messages
WHERE conversation_id = %s AND seq > %s
  AND EXISTS (SELECT 1 FROM conversations WHERE id = %s AND user_id = %s)
ORDER BY seq LIMIT %s
"""
_MY_BEFORE = """
SELECT seq, content, token_count FROM messages
WHERE conversation_id = %s AND seq < %s
  AND EXISTS (SELECT 1 FROM conversations WHERE id = %s AND user_id = %s)
ORDER BY seq DESC LIMIT %s
"""
_MY_LIMIT = (
    "SELECT role, content FROM messages WHERE conversation_id = %s ORDER BY seq DESC LIMIT %s"
)


def _decode_mariadb_row(row: Sequence[Any], cid: str) -> tuple[Any, ...]:
    """What a correct store hands back: JSON (LONGTEXT) decoded, DATETIME(6) aware UTC."""
    seq, id_, role, content, calls, name, call_id, metadata, key, tokens, at, parts = row
    return (
        seq,
        id_,
        role,
        content,
        json.loads(calls) if calls else None,
        name,
        call_id,
        _json(metadata),
        key,
        tokens,
        at.replace(tzinfo=UTC),
        cid,
        json.loads(parts) if parts else None,
    )


MY_STATEMENT_CACHE = 16


async def _my_connect(database: str, *, autocommit: bool, statement_cache: int) -> Any:
    return await asyncmy().connect(
        autocommit=autocommit,
        init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        stmt_cache_size=statement_cache,
        **mariadb_connect_args(database),
    )


async def _my_close(conn: Any) -> None:
    await conn.ensure_closed()


def _my_terminate(conn: Any) -> None:
    conn.close()


class RawMariaDB(Store):
    """asyncmy connections in ``_Connections``, READ COMMITTED (as convodb's sessions run),
    asyncmy's statement cache on: positional ``%s`` statements run as server-side prepared
    statements (prepared once per connection, binary rows), and ``executemany`` of an INSERT
    as one ``COM_STMT_BULK_EXECUTE``. Measured against the text protocol (p50 of 300-600
    sequential calls, medians of 3 rounds, in two sessions): latest-50 0.46-0.53 ms vs
    0.55-0.65 ms, an append of 1 message 0.47-0.65 vs 0.53-0.77 ms, of 10 0.63-0.77 vs
    0.80-1.17 ms.

    Writers use connections with autocommit off (the bump, the INSERT, COMMIT: three round
    trips); reads use connections of their own with autocommit on, so a read is one
    statement, one round trip, and never leaves a transaction open (see
    ``raw_alternatives.py``).
    """

    name, group, dialects = "raw", "core", ("mariadb",)
    statement_cache = MY_STATEMENT_CACHE
    """asyncmy's ``stmt_cache_size``; 0 is its text protocol (``mariadb_layers.py``)."""

    async def open(self) -> None:
        database, cache = self.target.path, self.statement_cache
        self._writers = _Connections(
            lambda: _my_connect(database, autocommit=False, statement_cache=cache),
            _my_terminate,
            _my_close,
            POOL_SIZE,
        )
        self._readers = _Connections(
            lambda: _my_connect(database, autocommit=True, statement_cache=cache),
            _my_terminate,
            _my_close,
            POOL_SIZE,
        )

    async def close(self) -> None:
        await self._writers.close()
        await self._readers.close()

    async def create(self, cid: str) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        conn = await self._writers.get()
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(
                    "INSERT INTO conversations (id, user_id, metadata, last_seq, created_at, "
                    "updated_at) VALUES (%s, %s, '{}', 0, %s, %s)",
                    (cid, USER, now, now),
                )
            await conn.commit()
        except BaseException:
            self._writers.drop(conn)
            raise
        self._writers.put(conn)

    async def append(self, cid: str, msgs: Sequence[Msg]) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        conn = await self._writers.get()
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(_MY_BUMP, (len(msgs), now, cid, USER))
                mine = cursor.rowcount == 1  # 0 rows: not this user's conversation
                if mine:
                    first = cursor.lastrowid - len(msgs) + 1
                    rows = [
                        (cid, first + i, str(uuid.uuid4()), role, content, "{}", tokens, now)
                        for i, (role, content, tokens) in enumerate(msgs)
                    ]
                    await cursor.executemany(_MY_INSERT, rows)
            await (conn.commit() if mine else conn.rollback())
        except BaseException:
            self._writers.drop(conn)  # closing it ends the transaction: the server rolls back
            raise
        self._writers.put(conn)
        if not mine:
            raise ConversationMissing(cid)

    async def _fetch(self, sql: str, params: Sequence[Any]) -> Sequence[Any]:
        conn = await self._readers.get()
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(sql, params)
                rows = await cursor.fetchall()
        except BaseException:
            self._readers.drop(conn)
            raise
        self._readers.put(conn)
        return rows  # type: ignore[no-any-return]

    async def latest(self, cid: str, n: int) -> list[str]:
        rows = await self._fetch(_MY_LATEST, (cid, cid, USER, n))
        return [_decode_mariadb_row(r, cid)[3] for r in reversed(rows)]

    async def read_all(self, cid: str) -> list[str]:
        out: list[str] = []
        cursor = 0
        while True:
            items, cursor = await self.follow(cid, cursor)
            if not items:
                return out
            out.extend(items)

    async def follow(self, cid: str, cursor: Any) -> tuple[list[str], Any]:
        rows = await self._fetch(_MY_AFTER, (cid, cursor or 0, cid, USER, PAGE))
        return [r[1] for r in rows], (rows[-1][0] if rows else cursor)

    async def window(self, cid: str, max_tokens: int) -> int | None:
        kept, used, before = 0, 0, 2**62
        while True:
            rows = await self._fetch(_MY_BEFORE, (cid, before, cid, USER, 100))
            for _seq, content, tokens in rows:
                used += tokens or tokens_estimate(content)
                if used > max_tokens:
                    return kept
                kept += 1
            if len(rows) < 100:
                return kept
            before = rows[-1][0]

    async def bulk_load(self, conversations: Sequence[tuple[str, int]], first: int) -> None:
        await load_core(self.target, conversations, first_message=first)


class LimitMariaDB(RawMariaDB):
    """The physical limit of latest-50: ``role, content`` only, no ownership check."""

    name, writes = "limit", False

    async def latest(self, cid: str, n: int) -> list[str]:
        rows = await self._fetch(_MY_LIMIT, (cid, n))
        return [r[1] for r in reversed(rows)]

    async def window(self, cid: str, max_tokens: int) -> int | None:
        return None


# -- convodb, through its public API ----------------------------------------------------------


class Convodb(Store):
    name, group = "convodb", "core"
    dialects = ("sqlite", "postgresql", "mariadb")

    async def open(self) -> None:
        from convodb import ConversationService, Database

        self._service_type = ConversationService
        # A hot-path pool of at least POOL_SIZE (three quarters of the budget; see Database).
        self.db = Database(self.target.convodb_url, max_connections=POOL_SIZE * 4 // 3 + 1)
        await self.db.create_all()

    async def close(self) -> None:
        await self.db.dispose()

    async def create(self, cid: str) -> None:
        async with self.db.session() as session:
            await self._service_type(session).create_conversation(USER, conversation_id=cid)

    async def append(self, cid: str, msgs: Sequence[Msg]) -> None:
        async with self.db.session() as session:
            service = self._service_type(session)
            if len(msgs) == 1:
                role, content, _ = msgs[0]
                await service.save_message(cid, role, content, user_id=USER)
            else:
                await service.save_conversation_messages(
                    cid, USER, [{"role": role, "content": content} for role, content, _ in msgs]
                )

    async def latest(self, cid: str, n: int) -> list[str]:
        async with self.db.session() as session:
            history = await self._service_type(session).get_conversation_history(cid, USER, n)
        return [m.content or "" for m in history]

    async def read_all(self, cid: str) -> list[str]:
        out: list[str] = []
        async with self.db.session() as session:
            service, cursor = self._service_type(session), None
            while True:
                page = await service.list_messages(cid, USER, limit=PAGE, cursor=cursor)
                out.extend(m.content or "" for m in page.items)
                if (cursor := page.next_cursor) is None:
                    return out

    async def follow(self, cid: str, cursor: Any) -> tuple[list[str], Any]:
        async with self.db.session() as session:
            page = await self._service_type(session).list_messages(
                cid, USER, after_seq=cursor or 0, limit=PAGE
            )
        items = page.items
        return [m.content or "" for m in items], (items[-1].seq if items else cursor)

    async def window(self, cid: str, max_tokens: int) -> int | None:
        method = getattr(self._service_type, "get_agent_input", None)
        if method is None:
            return None
        parameters = inspect.signature(method).parameters
        kwargs: dict[str, Any] = {}
        if "max_tokens" in parameters:
            kwargs["max_tokens"] = max_tokens
        async with self.db.session() as session:
            result = await self._service_type(session).get_agent_input(cid, USER, **kwargs)
        messages = getattr(result, "messages", result)
        return len(messages) if isinstance(messages, Sequence) else -1

    async def bulk_load(self, conversations: Sequence[tuple[str, int]], first: int) -> None:
        await load_core(self.target, conversations, first_message=first)
