"""``python -m benchmarks.raw_alternatives``: the ways to write each ``raw`` operation, measured.

``raw`` is meant to be the fastest correct code a person would write for each operation (see
``stores.py``). This measures the alternatives on each database, with the same statements,
columns, ownership check and row decoding, interleaved in rounds on one loaded database, and
prints medians: latest-50 of a random conversation, an append of 1 and of 10 messages (p50 of
sequential calls), and 20 concurrent writers with a follower (msg/s; anomalies must be 0).
``stores.py`` keeps the fastest; ``results/raw-alternatives.md`` records a run.

Not candidates, shown for scale: ``limit`` (``role, content`` only, no ownership check) and,
on SQLite, ``sqlite3`` called in the event loop itself, which blocks the loop for the whole
statement (and up to the busy timeout behind another process's write lock), as no async
store may.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from . import workloads as w
from ._data import USER, aiosqlite, asyncmy, asyncpg, fresh_database, load_core
from ._data import mariadb_connect_args as _my_args
from .run import _create_core_schema
from .stores import (
    _MY_LATEST,
    _SQ_AFTER,
    _SQ_BUMP,
    _SQ_INSERT,
    _SQ_LATEST,
    POOL_SIZE,
    SQLITE_PRAGMAS,
    ConversationMissing,
    LimitMariaDB,
    LimitPostgres,
    LimitSqlite,
    Msg,
    RawMariaDB,
    RawPostgres,
    RawSqlite,
    Store,
    _decode_sqlite_row,
    _sqlite_now,
)

# -- SQLite ------------------------------------------------------------------------------------


def _old_decode_sqlite_row(row: Sequence[Any], cid: str) -> tuple[Any, ...]:
    """The old raw store's decoding: ``json.loads`` for every JSON value, two calls a time."""
    seq, id_, role, content, calls, name, call_id, metadata, key, tokens, at, parts = row
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
        cid,
        json.loads(parts) if parts else None,
    )


class SqAiosqliteQueue(RawSqlite):
    """The old raw store: a queue of up to 22 aiosqlite connections; an append is three hops
    (bump, INSERT, COMMIT), a read one; the old decoding."""

    name = "aiosqlite, queue of 22 connections (old raw)"

    async def open(self) -> None:
        self._idle: asyncio.Queue[Any] = asyncio.Queue()
        self._all: list[Any] = []

    async def _acquire(self) -> Any:
        if self._idle.empty() and len(self._all) < POOL_SIZE:
            conn = await aiosqlite().connect(self.target.path, timeout=30)
            for pragma in SQLITE_PRAGMAS:
                await conn.execute(pragma)
            self._all.append(conn)
            return conn
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
            await _aiosqlite_append(conn, cid, msgs)
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
        return [_old_decode_sqlite_row(r, cid)[3] for r in reversed(rows)]

    async def follow(self, cid: str, cursor: Any) -> tuple[list[str], Any]:
        rows = await self._fetch(_SQ_AFTER, (cid, USER, cursor or 0, 1000))
        return [r[1] for r in rows], (rows[-1][0] if rows else cursor)


async def _aiosqlite_append(conn: Any, cid: str, msgs: Sequence[Msg]) -> None:
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


class SqAiosqlitePair(SqAiosqliteQueue):
    """Two long-lived aiosqlite connections: a writer (appends take turns on an asyncio lock)
    and a reader; the new decoding. An append is still three hops."""

    name = "aiosqlite, 1 writer + 1 reader connection"

    async def open(self) -> None:
        self._all = []
        for _ in range(2):
            conn = await aiosqlite().connect(self.target.path, timeout=30)
            for pragma in SQLITE_PRAGMAS:
                await conn.execute(pragma)
            self._all.append(conn)
        self._wconn, self._rconn = self._all
        self._lock = asyncio.Lock()

    async def create(self, cid: str) -> None:
        now = _sqlite_now()
        async with self._lock:
            await self._wconn.execute(
                "INSERT INTO conversations (id, user_id, metadata, last_seq, created_at, "
                "updated_at) VALUES (?, ?, '{}', 0, ?, ?)",
                (cid, USER, now, now),
            )
            await self._wconn.commit()

    async def append(self, cid: str, msgs: Sequence[Msg]) -> None:
        async with self._lock:
            await _aiosqlite_append(self._wconn, cid, msgs)

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return list(await self._rconn.execute_fetchall(sql, params))

    async def latest(self, cid: str, n: int) -> list[str]:
        rows = await self._fetch(_SQ_LATEST, (cid, USER, n))
        return [_decode_sqlite_row(r, cid)[3] for r in reversed(rows)]


class SqExecutor(RawSqlite):
    """Plain ``sqlite3`` through ``loop.run_in_executor``: a one-thread executor owning the
    writer connection, a two-thread one for readers (a connection per thread); one hop per
    operation, as the new raw store, but through ``concurrent.futures``."""

    name = "sqlite3 via run_in_executor, 1 hop"

    async def open(self) -> None:
        self._write_pool = ThreadPoolExecutor(1)
        self._read_pool = ThreadPoolExecutor(2)
        self._conns: dict[int, sqlite3.Connection] = {}
        self._writer = _ExecutorRunner(self._write_pool, self._conns, self.target.path)  # type: ignore[assignment]
        self._readers = _ExecutorRunner(self._read_pool, self._conns, self.target.path)  # type: ignore[assignment]

    async def close(self) -> None:
        for pool in (self._write_pool, self._read_pool):
            pool.shutdown()
        for conn in self._conns.values():
            conn.close()


class _ExecutorRunner:
    def __init__(self, pool: ThreadPoolExecutor, conns: dict[int, Any], path: str) -> None:
        self._pool, self._conns, self._path = pool, conns, path

    def _call(self, work: Any) -> Any:
        key = threading.get_ident()
        conn = self._conns.get(key)
        if conn is None:  # one per executor thread, closed in SqExecutor.close
            conn = self._conns[key] = _sqlite_connect_any_thread(self._path)
        try:
            return work(conn)
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise

    async def run(self, work: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, work)


class SqInLoop(RawSqlite):
    """Not a candidate: ``sqlite3`` in the event loop's own thread (no hop at all)."""

    name = "(scale) sqlite3 in the event loop, no hop"

    async def open(self) -> None:
        self._conn = _sqlite_connect_any_thread(self.target.path)
        self._writer = self._readers = _InLoop(self._conn)  # type: ignore[assignment]

    async def close(self) -> None:
        self._conn.close()


def _sqlite_connect_any_thread(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    for pragma in SQLITE_PRAGMAS:
        conn.execute(pragma)
    return conn


class _InLoop:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def run(self, work: Any) -> Any:
        try:
            return work(self._conn)
        except BaseException:
            if self._conn.in_transaction:
                self._conn.rollback()
            raise


# -- PostgreSQL --------------------------------------------------------------------------------


class PgAsyncpgPool(RawPostgres):
    """The old raw store: asyncpg's ``Pool`` (no reset query; idle connections closed after
    1 s), ``pool.fetch`` per operation."""

    name = "asyncpg Pool (old raw)"

    async def open(self) -> None:
        async def init(conn: Any) -> None:
            for kind in ("json", "jsonb"):
                await conn.set_type_codec(
                    kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
                )

        async def no_reset(conn: Any) -> None:
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

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        return await self.pool.fetch(sql, *args)  # type: ignore[no-any-return]


class PgPrepared(RawPostgres):
    """The new raw store's queue of connections, with statements prepared explicitly once per
    connection (``conn.prepare``) instead of through asyncpg's statement cache."""

    name = "queue of connections, explicit prepare"

    async def open(self) -> None:
        await super().open()
        self._prepared: dict[tuple[int, str], Any] = {}

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        conn = await self._conns.get()
        try:
            statement = self._prepared.get((id(conn), sql))
            if statement is None:
                statement = self._prepared[id(conn), sql] = await conn.prepare(sql)
            rows = await statement.fetch(*args)
        except BaseException:
            self._conns.drop(conn)
            raise
        self._conns.put(conn)
        return rows  # type: ignore[no-any-return]


# -- MariaDB -----------------------------------------------------------------------------------


class MyAsyncmyPool(RawMariaDB):
    """The old raw store: asyncmy's pool, autocommit off everywhere, so a read is the SELECT
    and a COMMIT (two round trips)."""

    name = "asyncmy pool, reads commit (old raw)"

    async def open(self) -> None:
        self.pool = await asyncmy().create_pool(
            minsize=1,
            maxsize=POOL_SIZE,
            autocommit=False,
            init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            stmt_cache_size=16,
            **_my_args(self.target.path),
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
        from .stores import _MY_BUMP, _MY_INSERT

        now = datetime.now(UTC).replace(tzinfo=None)
        async with self.pool.acquire() as conn, conn.cursor() as cursor:
            try:
                await cursor.execute(_MY_BUMP, (len(msgs), now, cid, USER))
                if cursor.rowcount != 1:
                    raise ConversationMissing(cid)
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
        async with self.pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute(sql, params)
            rows = await cursor.fetchall()
            await conn.commit()
            return rows  # type: ignore[no-any-return]

    async def latest(self, cid: str, n: int) -> list[str]:
        rows = await self._fetch(_MY_LATEST, (cid, cid, USER, n))
        return [_old_decode_mariadb(r, cid)[3] for r in reversed(rows)]


def _old_decode_mariadb(row: Sequence[Any], cid: str) -> tuple[Any, ...]:
    seq, id_, role, content, calls, name, call_id, metadata, key, tokens, at, parts = row
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
        cid,
        json.loads(parts) if parts else None,
    )


class MyQueueReadsCommit(RawMariaDB):
    """The new raw store's queue of connections, but reads on the writers' connections
    (autocommit off): the SELECT, then COMMIT."""

    name = "queue of connections, reads commit"

    async def _fetch(self, sql: str, params: Sequence[Any]) -> Sequence[Any]:
        conn = await self._writers.get()
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(sql, params)
                rows = await cursor.fetchall()
            await conn.commit()
        except BaseException:
            self._writers.drop(conn)
            raise
        self._writers.put(conn)
        return rows  # type: ignore[no-any-return]


# -- the run -------------------------------------------------------------------------------------

VARIANTS: dict[str, tuple[type[Store], ...]] = {
    "sqlite": (SqAiosqliteQueue, SqAiosqlitePair, SqExecutor, RawSqlite, LimitSqlite, SqInLoop),
    "postgresql": (PgAsyncpgPool, PgPrepared, RawPostgres, LimitPostgres),
    "mariadb": (MyAsyncmyPool, MyQueueReadsCommit, RawMariaDB, LimitMariaDB),
}


NEW_RAW: dict[type[Store], str] = {
    RawSqlite: "sqlite3 on threads of its own, 1 hop (new raw)",
    RawPostgres: "queue of asyncpg connections, statement cache (new raw)",
    RawMariaDB: "queue of connections, autocommit reads (new raw)",
}


def _label(store: Store) -> str:
    return NEW_RAW.get(type(store), store.name)


async def run_dialect(dialect: str, rounds: int, ops: int, cap_s: float) -> str:
    conversations = [(f"r{i:05d}", 100) for i in range(300)]
    cids = [cid for cid, _ in conversations]
    results: dict[str, dict[str, list[float]]] = {}
    async with fresh_database(dialect) as target:
        await _create_core_schema(target)
        await load_core(target, conversations)
        stores = [cls(target) for cls in VARIANTS[dialect]]
        async with contextlib.AsyncExitStack() as stack:
            for store in stores:
                await store.open()
                stack.push_async_callback(store.close)
            for r in range(rounds):
                for k, store in enumerate(stores):
                    out = results.setdefault(_label(store), {})
                    res = await w.latest(store, cids, ops, cap_s, seed=r)
                    out.setdefault("latest-50 p50 ms", []).append(res["p50_ms"])
                    if not store.writes:
                        continue
                    for batch, key in ((1, "append 1 p50 ms"), (10, "append 10 p50 ms")):
                        res = await w.append(store, f"a{batch}-{r}-{k}", ops, batch, cap_s)
                        out.setdefault(key, []).append(res["p50_ms"])
                    res = await w.concurrent(store, f"c-{r}-{k}", 20, 10, cap_s * 10)
                    out.setdefault("20 writers msg/s", []).append(res["msg_s"])
                    bad = sum(res[x] for x in ("lost", "duplicated", "misordered", "errors"))
                    out.setdefault("anomalies", []).append(bad)
                stamp = time.strftime("%H:%M:%S")
                print(f"[{stamp}] {dialect}: round {r + 1} done", file=sys.stderr)
    columns = ["latest-50 p50 ms", "append 1 p50 ms", "append 10 p50 ms", "20 writers msg/s"]
    lines = [
        f"\n## {dialect}\n",
        "| variant | " + " | ".join(columns) + " | anomalies |",
        "|---|" + "---:|" * (len(columns) + 1),
    ]
    for label, out in results.items():
        cells = []
        for c in columns:
            values = out.get(c)
            cells.append(f"{statistics.median(values):.3g}" if values else "-")
        anomalies = sum(out.get("anomalies", [])) if "anomalies" in out else "-"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {anomalies} |")
    return "\n".join(lines)


def decode_costs(repeat: int = 2000) -> str:
    """Decoding 50 rows (us), old vs new, for SQLite's text rows."""
    at = "2025-01-01 00:00:00.123456"
    row = (1, "x" * 36, "user", "hello " * 40, None, None, None, "{}", None, 60, at, None)
    rows = [row] * 50
    out = []
    for label, decode in (("old", _old_decode_sqlite_row), ("new", _decode_sqlite_row)):
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeat):
                [decode(r, "c1") for r in rows]
            best = min(best, (time.perf_counter() - start) / repeat * 1e6)
        out.append(f"{label} {best:.1f} us")
    return "decoding 50 SQLite rows: " + ", ".join(out)


async def main_async(args: argparse.Namespace) -> None:
    print(
        f"raw alternatives: {args.rounds} rounds, <= {args.ops} calls / {args.cap_s} s each; "
        "medians of rounds"
    )
    print(decode_costs())
    for dialect in args.db.split(","):
        print(await run_dialect(dialect, args.rounds, args.ops, args.cap_s), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.raw_alternatives")
    parser.add_argument("--db", default="sqlite,postgresql,mariadb")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--cap-s", type=float, default=1.0)
    asyncio.run(main_async(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
