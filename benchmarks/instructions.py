"""CPU instructions per operation, counted by callgrind: ``python -m benchmarks.instructions``.

Latencies on this shared 2-core machine move by a third between two runs of the same code,
more than most single changes to the hot path are worth. Instructions do not: callgrind
counts the same total for the same code and input whatever else the machine runs. This
counts, for ``raw`` and ``convodb`` (the stores of ``stores.py``), the instructions of the
whole client process (every thread: Python, the driver, and on SQLite the database engine
itself) per latest-50 read, single append and append of 10, as the difference between a run
of ``--count`` operations and a run of none (start-up, schema and warm-up cancel out). A
database server's own work is not counted: on PostgreSQL and MariaDB the figures are the
client's CPU only.

It is a CPU yardstick, not a latency one: a thread hop costs little CPU and a lot of time.
Each operation runs in its own process under ``valgrind --tool=callgrind`` (about 50x
slower), so keep ``--count`` in the hundreds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile

OPERATIONS = ("latest50", "append1", "append10")
STORES = ("raw", "convodb")
WARM_UP = 50


async def _child(dialect: str, store_name: str, operation: str, count: int) -> None:
    """Run ``count`` operations (after a warm-up) on a fresh database."""
    from ._data import fresh_database
    from .stores import Convodb, RawMariaDB, RawPostgres, RawSqlite

    raw = {"sqlite": RawSqlite, "postgresql": RawPostgres, "mariadb": RawMariaDB}[dialect]
    async with fresh_database(dialect) as target:
        schema = Convodb(target)
        await schema.open()  # creates the schema, as in the benchmark
        store = schema if store_name == "convodb" else raw(target)
        if store is not schema:
            await store.open()
        await schema.bulk_load([("read", 200)], 1)
        await store.create("write")
        text = "hello world, this is a message of moderate length. " * 4
        one, ten = [("user", text, 52)], [("user", text, 52)] * 10

        async def latest() -> None:
            await store.latest("read", 50)

        async def append1() -> None:
            await store.append("write", one)

        async def append10() -> None:
            await store.append("write", ten)

        op = {"latest50": latest, "append1": append1, "append10": append10}[operation]
        for _ in range(WARM_UP + count):
            await op()
        if store is not schema:
            await store.close()
        await schema.close()


def _instructions(dialect: str, store: str, operation: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as directory:
        out = os.path.join(directory, "callgrind.out")
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--child",
            dialect,
            store,
            operation,
            str(count),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated dialects")
    parser.add_argument("--count", type=int, default=400, help="operations per measured run")
    parser.add_argument("--ops", default=",".join(OPERATIONS), help="comma-separated operations")
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated stores")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        dialect, store, operation, count = args.child
        asyncio.run(_child(dialect, store, operation, int(count)))
        return
    print(f"instructions per operation (callgrind; {args.count} operations, minus none)")
    stores = args.stores.split(",")
    print(f"{'db':<11} {'operation':<9} " + " ".join(f"{s:>10}" for s in stores) + "   ratio")
    for dialect in args.db.split(","):
        for operation in args.ops.split(","):
            per_op = {}
            for store in stores:
                base = _instructions(dialect, store, operation, 0)
                total = _instructions(dialect, store, operation, args.count)
                per_op[store] = (total - base) / args.count
            ratio = (
                f"{per_op['convodb'] / per_op['raw']:>6.2f}x"
                if {"raw", "convodb"} <= per_op.keys()
                else ""
            )
            counts = " ".join(f"{v:>10,.0f}" for v in per_op.values())
            print(f"{dialect:<11} {operation:<9} {counts} {ratio}", flush=True)


if __name__ == "__main__":
    main()
