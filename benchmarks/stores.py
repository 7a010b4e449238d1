"""The stores under test, behind one small interface: ``raw`` (the yardstick) and ``convodb``.

``raw`` is the least work a correct store must do, written by hand on the bare driver, on
convodb's own schema (so that the two differ in statements, not in tables):

- PostgreSQL: one statement per append, a data-modifying CTE that bumps ``last_seq`` (the row
  lock that orders concurrent appends) and inserts the batch with the reserved ``seq`` values;
  one round trip, autocommit, prepared once per connection by asyncpg.
- SQLite: ``UPDATE conversations ... RETURNING last_seq`` (which takes the write lock), one
  ``executemany`` INSERT and COMMIT: SQLite has no data-modifying CTE, and in-process
  statements cost a thread hop each, not a network round trip.
- MariaDB: ``UPDATE conversations SET last_seq = LAST_INSERT_ID(last_seq + n) ...`` (the row
  lock; the new ``last_seq`` comes back in the OK packet as ``lastrowid``, the affected-row
  count says whether the conversation is the user's), one INSERT of the batch (a bulk
  ``executemany`` of a prepared statement), COMMIT: three round trips, as MariaDB has neither
  ``UPDATE ... RETURNING`` nor a data-modifying CTE. Reads commit too (autocommit is off).
- latest-N: ``WHERE conversation_id = ? AND EXISTS (owned) ORDER BY seq DESC LIMIT n``, an
  index range scan of the primary key with the ownership check in the same statement; rows
  are decoded (JSON, UTC timestamps) as a correct store must.

``convodb`` goes through the public API only (``from convodb import ...``), a session per
operation, as a stateless worker uses it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ._data import USER, Target, aiosqlite, asyncmy, asyncpg, load_core, mariadb_connect_args

Msg = tuple[str, str, int]
"""role, content, token estimate"""

POOL_SIZE = 22
"""Connections per store: the 20 concurrent writers, the following reader, one spare. Pools
keep few idle connections (``IDLE``) so that five stores stay under PostgreSQL's default
``max_connections`` of 100, shared with whoever else uses the server."""
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

    def __init__(self, target: Target) -> None:
        self.target = target

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

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
    "created_at"
)
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


class ConversationMissing(LookupError):
    pass


class RawPostgres(Store):
    name, group, dialects = "raw", "core", ("postgresql",)

    async def open(self) -> None:
        async def init(conn: Any) -> None:
            for kind in ("json", "jsonb"):
                await conn.set_type_codec(
                    kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
                )

        async def no_reset(conn: Any) -> None:
            # The raw store keeps no session state on a connection (no temp tables, no
            # advisory locks, no LISTEN), so the pool's default reset query on release -- one
            # more round trip per operation -- is work a minimal store need not do.
            pass

        self.pool = await asyncpg().create_pool(
            self.target.dsn,
            min_size=1,
            max_size=POOL_SIZE,
            init=init,
            max_inactive_connection_lifetime=1.0,
            reset=no_reset,
        )

    async def close(self) -> None:
        await self.pool.close()

    async def create(self, cid: str) -> None:
        now = datetime.now(UTC)
        await self.pool.execute(
            "INSERT INTO conversations (id, user_id, metadata, last_seq, created_at, updated_at)"
            " VALUES ($1, $2, '{}', 0, $3, $3)",
            cid,
            USER,
            now,
        )

    async def append(self, cid: str, msgs: Sequence[Msg]) -> None:
        rows = await self.pool.fetch(
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
        rows = await self.pool.fetch(_PG_LATEST, cid, USER, n)
        return [r["content"] for r in reversed(rows)]

    async def read_all(self, cid: str) -> list[str]:
        out: list[str] = []
        cursor = 0
        while True:
            items, cursor = await self.follow(cid, cursor)
            if not items:
                return out
            out.extend(items)

    async def follow(self, cid: str, cursor: Any) -> tuple[list[str], Any]:
        rows = await self.pool.fetch(_PG_AFTER, cid, USER, cursor or 0, PAGE)
        return [r["content"] for r in rows], (rows[-1]["seq"] if rows else cursor)

    async def window(self, cid: str, max_tokens: int) -> int | None:
        kept, used, before = 0, 0, 2**62
        while True:
            rows = await self.pool.fetch(_PG_BEFORE, cid, USER, before, 100)
            for r in rows:
                used += r["token_count"] or tokens_estimate(r["content"])
                if used > max_tokens:
                    return kept
                kept += 1
            if len(rows) < 100:
                return kept
            before = rows[-1]["seq"]

    async def bulk_load(self, conversations: Sequence[tuple[str, int]], first: int) -> None:
        await load_core(self.target, conversations, first_message=first)


def tokens_estimate(text: str | None) -> int:
    return max(1, len(text or "") // 4)


# -- raw: SQLite ------------------------------------------------------------------------------

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


def _sqlite_now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _decode_sqlite_row(row: Sequence[Any]) -> tuple[Any, ...]:
    """What a correct store hands back: JSON decoded, timestamps aware UTC."""
    seq, id_, role, content, calls, name, call_id, metadata, key, tokens, at = row
    return (
        seq,
        id_,
        role,
        content,
        json.loads(calls) if calls else None,
        name,
        call_id,
        json.loads(metadata),
        key,
        tokens,
        datetime.fromisoformat(at).replace(tzinfo=UTC),
    )


class RawSqlite(Store):
    """aiosqlite with convodb's pragmas; a small pool so concurrent writers each hold one."""

    name, group, dialects = "raw", "core", ("sqlite",)

    async def open(self) -> None:
        self._idle: asyncio.Queue[Any] = asyncio.Queue()
        self._all: list[Any] = []

    async def _connect(self) -> Any:
        conn = await aiosqlite().connect(self.target.path, timeout=30)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        self._all.append(conn)
        return conn

    async def _acquire(self) -> Any:
        if self._idle.empty() and len(self._all) < POOL_SIZE:
            return await self._connect()
        return await self._idle.get()

    async def close(self) -> None:
        for conn in self._all:
            await conn.close()

    async def create(self, cid: str) -> None:
        conn = await self._acquire()
        try:
            now = _sqlite_now()
            await conn.execute(
                "INSERT INTO conversations (id, user_id, metadata, last_seq, created_at, "
                "updated_at) VALUES (?, ?, '{}', 0, ?, ?)",
                (cid, USER, now, now),
            )
            await conn.commit()
        finally:
            self._idle.put_nowait(conn)

    async def append(self, cid: str, msgs: Sequence[Msg]) -> None:
        conn = await self._acquire()
        try:
            now = _sqlite_now()
            bumped = await conn.execute_fetchall(_SQ_BUMP, (len(msgs), now, cid, USER))
            if not bumped:
                await conn.rollback()
                raise ConversationMissing(cid)
            first = bumped[0][0] - len(msgs) + 1
            rows = [
                (cid, first + i, str(uuid.uuid4()), role, content, tokens, now)
                for i, (role, content, tokens) in enumerate(msgs)
            ]
            if len(rows) == 1:
                await conn.execute(_SQ_INSERT, rows[0])
            else:
                await conn.executemany(_SQ_INSERT, rows)
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise
        finally:
            self._idle.put_nowait(conn)

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        conn = await self._acquire()
        try:
            return list(await conn.execute_fetchall(sql, params))
        finally:
            self._idle.put_nowait(conn)

    async def latest(self, cid: str, n: int) -> list[str]:
        rows = await self._fetch(_SQ_LATEST, (cid, USER, n))
        return [_decode_sqlite_row(r)[3] for r in reversed(rows)]

    async def read_all(self, cid: str) -> list[str]:
        out: list[str] = []
        cursor = 0
        while True:
            items, cursor = await self.follow(cid, cursor)
            if not items:
                return out
            out.extend(items)

    async def follow(self, cid: str, cursor: Any) -> tuple[list[str], Any]:
        rows = await self._fetch(_SQ_AFTER, (cid, USER, cursor or 0, PAGE))
        return [r[1] for r in rows], (rows[-1][0] if rows else cursor)

    async def window(self, cid: str, max_tokens: int) -> int | None:
        kept, used, before = 0, 0, 2**62
        while True:
            rows = await self._fetch(_SQ_BEFORE, (cid, USER, before, 100))
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


def _decode_mariadb_row(row: Sequence[Any]) -> tuple[Any, ...]:
    """What a correct store hands back: JSON (LONGTEXT) decoded, DATETIME(6) aware UTC."""
    seq, id_, role, content, calls, name, call_id, metadata, key, tokens, at = row
    return (
        seq,
        id_,
        role,
        content,
        json.loads(calls) if calls else None,
        name,
        call_id,
        json.loads(metadata),
        key,
        tokens,
        at.replace(tzinfo=UTC),
    )


class RawMariaDB(Store):
    """asyncmy's pool, autocommit off, READ COMMITTED (as convodb's sessions run).

    With ``stmt_cache_size`` asyncmy runs positional ``%s`` statements as server-side prepared
    statements (prepared once per connection, binary rows) and ``executemany`` of an INSERT as
    one ``COM_STMT_BULK_EXECUTE`` on MariaDB. Measured on this machine against the text
    protocol (p50 of 300-600 sequential calls, medians of 3 rounds, in two sessions): latest-50
    0.46-0.53 ms vs 0.55-0.65 ms, an append of 1 message 0.47-0.65 vs 0.53-0.77 ms, of 10
    0.63-0.77 vs 0.80-1.17 ms; with the text protocol, ``executemany`` (which asyncmy sends as
    one multi-row INSERT) and a hand-built ``VALUES`` list of n rows were within noise of each
    other. So the yardstick turns the statement cache on.
    """

    name, group, dialects = "raw", "core", ("mariadb",)

    async def open(self) -> None:
        self.pool = await asyncmy().create_pool(
            minsize=1,
            maxsize=POOL_SIZE,
            autocommit=False,
            init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            stmt_cache_size=16,
            **mariadb_connect_args(self.target.path),
        )

    async def close(self) -> None:
        self.pool.close()
        await self.pool.wait_closed()

    async def create(self, cid: str) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        async with self.pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute(
                "INSERT INTO conversations (id, user_id, metadata, last_seq, created_at, "
                "updated_at) VALUES (%s, %s, '{}', 0, %s, %s)",
                (cid, USER, now, now),
            )
            await conn.commit()

    async def append(self, cid: str, msgs: Sequence[Msg]) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        async with self.pool.acquire() as conn, conn.cursor() as cursor:
            try:
                await cursor.execute(_MY_BUMP, (len(msgs), now, cid, USER))
                if cursor.rowcount != 1:
                    raise ConversationMissing(cid)  # rolled back below
                first = cursor.lastrowid - len(msgs) + 1
                rows = [
                    (cid, first + i, str(uuid.uuid4()), role, content, "{}", tokens, now)
                    for i, (role, content, tokens) in enumerate(msgs)
                ]
                await cursor.executemany(_MY_INSERT, rows)
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise

    async def _fetch(self, sql: str, params: Sequence[Any]) -> Sequence[Any]:
        # Autocommit is off: the SELECT opens a transaction, which must end before the
        # connection goes back (asyncmy's pool closes a connection returned inside one).
        async with self.pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute(sql, params)
            rows = await cursor.fetchall()
            await conn.commit()
            return rows

    async def latest(self, cid: str, n: int) -> list[str]:
        rows = await self._fetch(_MY_LATEST, (cid, cid, USER, n))
        return [_decode_mariadb_row(r)[3] for r in reversed(rows)]

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
