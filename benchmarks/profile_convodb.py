"""Where convodb's time goes on append and latest-50: ``python -m benchmarks.profile_convodb``.

For each database, on a fresh database with a 200-message conversation:

- **statements** per operation, from SQLAlchemy's ``before_cursor_execute`` and transaction
  events, and pool checkouts (``pool_pre_ping`` costs a round trip per checkout);
- **round trips** per operation: on PostgreSQL by counting ReadyForQuery messages through a
  loopback proxy between the driver and the server (exact, driver-independent); on MariaDB by
  counting the commands the client sends through such a proxy (a packet with sequence id 0
  starts one; all but ``COM_STMT_CLOSE`` wait for a reply); on SQLite by
  counting aiosqlite's thread hops (each ``await`` on the driver is one: a diagnostic that
  wraps aiosqlite's private ``Connection._execute``, never used by the benchmark itself);
- **CPU vs wall** per operation, and a cProfile of the CPU time by package (convodb,
  sqlalchemy, driver, asyncio, other) with the top functions.

The same numbers for ``raw`` are printed alongside.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import importlib
import pstats
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ._data import Target, content_for, fresh_database, load_core
from .stores import Convodb, RawMariaDB, RawPostgres, RawSqlite, Store

RAW: dict[str, type[Store]] = {
    "sqlite": RawSqlite,
    "postgresql": RawPostgres,
    "mariadb": RawMariaDB,
}

Counter = collections.Counter


class PgRoundTrips:
    """A loopback TCP proxy that counts the server's ReadyForQuery ('Z') messages: one per
    completed round trip (simple query, or extended-protocol Sync)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.ready = 0
        self.client_messages: Counter[str] = Counter()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, server: bool) -> None:
            buffer = b""
            started = server  # the client's first message (startup / SSLRequest) has no type
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    buffer += data
                    while True:
                        if not started:
                            if len(buffer) < 4:
                                break
                            (length,) = struct.unpack("!I", buffer[:4])
                            if len(buffer) < length:
                                break
                            code = struct.unpack("!I", buffer[4:8])[0] if length >= 8 else 0
                            buffer = buffer[length:]
                            started = code != 80877103  # after SSLRequest comes startup
                            continue
                        if server and buffer[:1] in (b"N", b"S") and len(buffer) == 1:
                            buffer = b""  # the answer to an SSLRequest
                            break
                        if len(buffer) < 5:
                            break
                        (length,) = struct.unpack("!I", buffer[1:5])
                        if len(buffer) < length + 1:
                            break
                        kind = buffer[:1].decode()
                        message, buffer = buffer[: length + 1], buffer[length + 1 :]
                        if server and kind == "Z":
                            self.ready += 1
                        elif not server:
                            self.client_messages[kind] += 1
                            if kind == "Q":
                                self.client_messages["Q: " + message[5:-1].decode()[:40]] += 1
                    await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(
            pipe(reader, up_writer, server=False),
            pipe(up_reader, writer, server=True),
            return_exceptions=True,
        )


MYSQL_COMMANDS = {
    0x01: "QUIT",
    0x03: "QUERY",
    0x0E: "PING",
    0x11: "CHANGE_USER",
    0x16: "STMT_PREPARE",
    0x17: "STMT_EXECUTE",
    0x19: "STMT_CLOSE",
    0x1A: "STMT_RESET",
    0x1F: "RESET_CONNECTION",
    0xFA: "STMT_BULK_EXECUTE",
}
MYSQL_NO_REPLY = {0x01, 0x19}  # QUIT, STMT_CLOSE


class MySQLRoundTrips:
    """A loopback TCP proxy that counts the commands a MySQL/MariaDB client sends: a client
    packet with sequence id 0 starts a command, and every command but ``COM_STMT_CLOSE`` and
    ``COM_QUIT`` waits for the server's reply, so the count is the round trips (the
    handshake's client packets have sequence ids >= 1 and are not counted)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.ready = 0
        self.client_messages: Counter[str] = Counter()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def client_to_server() -> None:
            buffer = b""
            try:
                while data := await reader.read(65536):
                    up_writer.write(data)
                    buffer += data
                    while len(buffer) >= 4:
                        length = int.from_bytes(buffer[:3], "little")
                        if len(buffer) < length + 4:
                            break
                        packet, buffer = buffer[: length + 4], buffer[length + 4 :]
                        if packet[3] == 0 and length:
                            command = packet[4]
                            name = MYSQL_COMMANDS.get(command, hex(command))
                            if command not in MYSQL_NO_REPLY:
                                self.ready += 1
                            self.client_messages[name] += 1
                            if command in (0x03, 0x16):  # QUERY, STMT_PREPARE: the SQL
                                sql = " ".join(packet[5:].decode(errors="replace").split())
                                self.client_messages[f"{name}: {sql[:40]}"] += 1
                    await up_writer.drain()
            finally:
                up_writer.close()

        async def server_to_client() -> None:
            try:
                while data := await up_reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            finally:
                writer.close()

        await asyncio.gather(client_to_server(), server_to_client(), return_exceptions=True)


class SqliteHops:
    """Counts aiosqlite thread hops by the name of the function sent to the worker thread."""

    def __init__(self) -> None:
        self.hops: Counter[str] = Counter()
        aiosqlite = importlib.import_module("aiosqlite.core")
        self._cls = aiosqlite.Connection
        self._original = self._cls._execute
        hops, original = self.hops, self._original

        async def counted(conn: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
            hops[getattr(fn, "__name__", "?")] += 1
            return await original(conn, fn, *args, **kwargs)

        self._cls._execute = counted

    def restore(self) -> None:
        self._cls._execute = self._original


def watch_sqlalchemy(engine: Any) -> Counter[str]:
    """Statements and transaction events seen by SQLAlchemy on ``engine``."""
    event = importlib.import_module("sqlalchemy").event
    seen: Counter[str] = Counter()

    def _statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen["stmt: " + " ".join(statement.split())[:90]] += 1

    event.listen(engine.sync_engine, "before_cursor_execute", _statement)

    for name in ("begin", "commit", "rollback"):
        event.listen(engine.sync_engine, name, lambda *a, _n=name: seen.update([f"tx: {_n}"]))
    event.listen(engine.sync_engine.pool, "checkout", lambda *a: seen.update(["pool: checkout"]))
    return seen


LAYERS = (
    "convodb",
    "sqlalchemy",
    "asyncpg",
    "asyncmy",
    "aiosqlite",
    "sqlite3",
    "asyncio",
    "benchmarks",
)


def layer_of(filename: str) -> str:
    for layer in LAYERS:
        if f"/{layer}/" in filename or filename.endswith(f"/{layer}.py"):
            return layer
    if filename.startswith(("~", "<")):
        return "builtins"
    return "other"


async def measure(
    label: str, op: Callable[[int], Awaitable[Any]], n: int, top: int
) -> dict[str, Any]:
    for i in range(20):  # warm-up: pools, prepared statements, compiled cache
        await op(-1 - i)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(n):
        await op(i)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(n):
        await op(n + i)
    profiler.disable()
    stats = pstats.Stats(profiler)
    by_layer: Counter[str] = Counter()
    rows = []
    for (filename, _line, func), (_cc, calls, tottime, _cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        by_layer[layer_of(filename)] += tottime
        rows.append((tottime, calls, f"{layer_of(filename)}:{filename.rsplit('/', 1)[-1]}:{func}"))
    total = sum(by_layer.values()) or 1.0
    rows.sort(reverse=True)
    return {
        "label": label,
        "wall_us": wall / n * 1e6,
        "cpu_us": cpu / n * 1e6,
        "layers": {k: round(v / total * 100, 1) for k, v in by_layer.most_common()},
        "top": [(round(t / n * 1e6, 1), c // n, name) for t, c, name in rows[:top]],
    }


Proxy = PgRoundTrips | MySQLRoundTrips


@contextlib.asynccontextmanager
async def _proxied(target: Target) -> AsyncIterator[tuple[Target, Proxy | None]]:
    if target.dialect not in ("postgresql", "mariadb"):
        yield target, None
        return
    from urllib.parse import urlsplit

    parts = urlsplit(target.dsn)
    mariadb = target.dialect == "mariadb"
    upstream = parts.port or (3306 if mariadb else 5432)
    proxy = (MySQLRoundTrips if mariadb else PgRoundTrips)(parts.hostname or "127.0.0.1", upstream)
    port = await proxy.start()
    # Point the stores at the proxy through the module-level URL they read.
    data: Any = importlib.import_module("benchmarks._data")
    attribute = "MARIADB_URL" if mariadb else "POSTGRES_URL"
    original = getattr(data, attribute)
    setattr(data, attribute, original.replace(f":{upstream}/", f":{port}/"))
    try:
        yield target, proxy
    finally:
        setattr(data, attribute, original)
        await proxy.stop()


async def profile_dialect(dialect: str, n: int, top: int) -> None:
    print(f"\n######## {dialect}")
    async with fresh_database(dialect) as target:
        from convodb import Database

        async with Database(target.convodb_url) as db:
            await db.create_all()
        await load_core(target, [("p-read", 200)])
        hops = SqliteHops() if dialect == "sqlite" else None
        try:
            async with _proxied(target) as (t, proxy):
                raw: Store = RAW[dialect](t)
                conv = Convodb(t)
                for store in (raw, conv):
                    await store.open()
                seen = watch_sqlalchemy(conv.db.engine)
                for store in (raw, conv):
                    cid = f"p-{store.name}"
                    await store.create(cid)
                    await _one(store, cid, seen, hops, proxy)
                    for label, op in (
                        (
                            "append 1",
                            lambda i, s=store, c=cid: s.append(c, [("user", content_for(i), 40)]),
                        ),
                        (
                            "append 10",
                            lambda i, s=store, c=cid: s.append(
                                c, [("user", content_for(i * 10 + k), 40) for k in range(10)]
                            ),
                        ),
                        ("latest-50", lambda i, s=store: s.latest("p-read", 50)),
                    ):
                        result = await measure(f"{store.name} {label}", op, n, top)
                        _print(result)
                for store in (raw, conv):
                    await store.close()
        finally:
            if hops is not None:
                hops.restore()


async def _one(
    store: Store,
    cid: str,
    seen: Counter[str],
    hops: SqliteHops | None,
    proxy: Proxy | None,
) -> None:
    """Statements and round trips of one warm append and one warm latest-50."""
    for label, op in (
        ("append 1", lambda: store.append(cid, [("user", "hello", 2)])),
        ("append 10", lambda: store.append(cid, [("user", "hello", 2)] * 10)),
        ("latest-50", lambda: store.latest("p-read", 50)),
    ):
        await op()  # warm
        seen.clear()
        if hops:
            hops.hops.clear()
        before = proxy.ready if proxy else 0
        before_msgs = Counter(proxy.client_messages) if proxy else Counter()
        await op()
        print(f"-- {store.name} {label}:", end=" ")
        if proxy:
            sent = proxy.client_messages - before_msgs
            print(f"{proxy.ready - before} round trips (client messages {dict(sent)})", end=" ")
        if hops:
            print(f"{sum(hops.hops.values())} thread hops {dict(hops.hops)}", end=" ")
        print()
        if store.name == "convodb":
            for k, v in seen.items():
                print(f"     {v} x {k}")


def _print(r: dict[str, Any]) -> None:
    print(
        f"{r['label']}: wall {r['wall_us']:.0f} us/op, CPU {r['cpu_us']:.0f} us/op; "
        f"CPU by layer %: {r['layers']}"
    )
    for us, calls, name in r["top"]:
        print(f"    {us:8.1f} us  {calls:4d} calls/op  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_convodb")
    parser.add_argument("--db", default="sqlite,postgresql,mariadb")
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    for dialect in args.db.split(","):
        asyncio.run(profile_dialect(dialect, args.n, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
