"""Where convodb's time goes on MariaDB, layer by layer: ``python -m benchmarks.mariadb_layers``.

The same latest-50 and single-message append, p50 latency and this process's CPU per
operation, from the bare driver up to convodb, each layer adding one thing:

1. ``raw``: the yardstick (asyncmy, statement cache on: prepared statements, binary rows);
2. the same statements on asyncmy's text protocol (what SQLAlchemy's asyncmy dialect sends);
3. SQLAlchemy Core, ``engine.connect()`` + ``text()`` + commit (reads commit too: the
   engine's connections have autocommit off, where the raw store reads on autocommit
   connections), with the pool's reset-on-return skipped when no transaction is open;
4. the same with SQLAlchemy's default reset-on-return, a ``ROLLBACK`` round trip on every
   check-in, also after a commit;
5. an ``AsyncSession`` instead of a connection (as ``Database.session()`` hands out);
6. convodb, with the reset skipped as in 3 (through ``Database``'s engine options);
7. convodb as shipped.

Rounds are interleaved across the variants; the table shows the medians of the rounds. Rows
are decoded as the raw store decodes them in 1-5 (JSON, aware UTC), convodb decodes its own.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from ._data import USER, content_for, fresh_database, load_core
from .run import _create_core_schema
from .stores import (
    _MY_BUMP,
    _MY_INSERT,
    _MY_LATEST,
    POOL_SIZE,
    Convodb,
    Msg,
    RawMariaDB,
    Store,
    _decode_mariadb_row,
)


def _named(sql: str, names: Sequence[str]) -> str:
    """``%s`` placeholders as SQLAlchemy ``text()`` bind names, in order."""
    for name in names:
        sql = sql.replace("%s", f":{name}", 1)
    return sql


def _skip_idle_reset(engine: Any) -> None:
    """Roll back on check-in only when a transaction is open (asyncmy knows from the server's
    status flags); needs the engine made with ``pool_reset_on_return=None``."""

    @event.listens_for(engine.sync_engine, "reset")
    def _reset(dbapi_connection: Any, _record: Any, state: Any) -> None:
        if not state.terminate_only and dbapi_connection.driver_connection.get_transaction_status():
            dbapi_connection.rollback()


class RawText(RawMariaDB):
    statement_cache = 0  # asyncmy's text protocol


class SQLAlchemyCore(Store):
    """The raw store's statements through SQLAlchemy's asyncio engine on asyncmy."""

    orm = False
    reset = True

    async def open(self) -> None:
        options: dict[str, Any] = {} if self.reset else {"pool_reset_on_return": None}
        self.engine = create_async_engine(
            self.target.sqlalchemy_url,
            pool_size=POOL_SIZE,
            max_overflow=0,
            isolation_level="READ COMMITTED",
            **options,
        )
        if not self.reset:
            _skip_idle_reset(self.engine)
        self._latest = text(_named(_MY_LATEST, ("cid", "cid2", "uid", "n")))
        self._bump = text(_named(_MY_BUMP, ("n", "now", "cid", "uid")))
        self._insert = text(_named(_MY_INSERT, ("c", "s", "i", "r", "t", "m", "k", "a")))
        self._create = text(
            "INSERT INTO conversations (id, user_id, metadata, last_seq, created_at, updated_at)"
            " VALUES (:cid, :uid, '{}', 0, :now, :now)"
        )

    async def close(self) -> None:
        await self.engine.dispose()

    def _unit(self) -> Any:
        return AsyncSession(self.engine) if self.orm else self.engine.connect()

    async def create(self, cid: str) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        async with self._unit() as unit:
            await unit.execute(self._create, {"cid": cid, "uid": USER, "now": now})
            await unit.commit()

    async def append(self, cid: str, msgs: Sequence[Msg]) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        async with self._unit() as unit:
            result = await unit.execute(
                self._bump, {"n": len(msgs), "now": now, "cid": cid, "uid": USER}
            )
            if result.rowcount != 1:
                raise LookupError(cid)
            first = result.lastrowid - len(msgs) + 1
            rows = [
                {"c": cid, "s": first + i, "i": str(uuid.uuid4()), "r": role, "t": content}
                | {"m": "{}", "k": tokens, "a": now}
                for i, (role, content, tokens) in enumerate(msgs)
            ]
            await unit.execute(self._insert, rows)
            await unit.commit()

    async def latest(self, cid: str, n: int) -> list[str]:
        async with self._unit() as unit:
            params = {"cid": cid, "cid2": cid, "uid": USER, "n": n}
            rows = (await unit.execute(self._latest, params)).all()
            await unit.commit()
        return [_decode_mariadb_row(r, cid)[3] for r in reversed(rows)]


class SQLAlchemyCoreNoReset(SQLAlchemyCore):
    reset = False


class SQLAlchemySession(SQLAlchemyCore):
    orm = True


class ConvodbNoReset(Convodb):
    async def open(self) -> None:
        from convodb import ConversationService, Database

        self._service_type = ConversationService
        self.db = Database(
            self.target.convodb_url,
            max_connections=POOL_SIZE * 4 // 3 + 1,
            pool_reset_on_return=None,
        )
        _skip_idle_reset(self.db.engine)
        await self.db.create_all()


VARIANTS: tuple[tuple[str, type[Store]], ...] = (
    ("1 raw: asyncmy, prepared statements (yardstick)", RawMariaDB),
    ("2 asyncmy, text protocol", RawText),
    ("3 SQLAlchemy Core text(), no idle ROLLBACK", SQLAlchemyCoreNoReset),
    ("4 SQLAlchemy Core text()", SQLAlchemyCore),
    ("5 SQLAlchemy AsyncSession text()", SQLAlchemySession),
    ("6 convodb, no idle ROLLBACK", ConvodbNoReset),
    ("7 convodb", Convodb),
)


async def _measure(op: Callable[[int], Awaitable[Any]], n: int) -> tuple[float, float]:
    latencies = []
    cpu = time.process_time()
    for i in range(n):
        start = time.perf_counter()
        await op(i)
        latencies.append(time.perf_counter() - start)
    return statistics.median(latencies) * 1e6, (time.process_time() - cpu) / n * 1e6


async def run(ops: int, rounds: int) -> str:
    conversations = 300
    async with fresh_database("mariadb") as target:
        await _create_core_schema(target)
        await load_core(target, [(f"r{i}", 100) for i in range(conversations)])
        stores = [(label, cls(target)) for label, cls in VARIANTS]
        for _, store in stores:
            await store.open()
        try:
            for k, (_, store) in enumerate(stores):
                await store.create(f"a{k}")
            measured: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for _ in range(rounds):
                for k, (label, store) in enumerate(stores):
                    work: dict[str, Callable[[int], Awaitable[Any]]] = {
                        "latest-50": lambda i, s=store: s.latest(f"r{i % conversations}", 50),
                        "append 1": lambda i, s=store, c=f"a{k}": s.append(
                            c, [("user", content_for(i), 40)]
                        ),
                    }
                    for name, op in work.items():
                        for i in range(20):  # warm-up: pools, statement caches
                            await op(i)
                        measured.setdefault((name, label), []).append(await _measure(op, ops))
        finally:
            for _, store in stores:
                await store.close()
    lines = [f"{'operation':10s}  {'variant':48s}  {'p50 us':>7s}  {'CPU us/op':>9s}"]
    for (name, label), results in sorted(measured.items()):
        p50 = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        lines.append(f"{name:10s}  {label:48s}  {p50:7.0f}  {cpu:9.0f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mariadb_layers", description=__doc__
    )
    parser.add_argument("-n", type=int, default=600, help="operations per round and variant")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(asyncio.run(run(args.n, args.rounds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
