"""``python -m benchmarks``: every workload, every store, SQLite, PostgreSQL and MariaDB, in one
run.

Prints one table per database (medians of the rounds, ratios against ``raw``) and writes
the full results as JSON. ``--quick`` is a smoke-sized run (under 2 minutes); the full run
takes under 15 minutes on a 2-core machine. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import workloads as w
from ._data import Target, fresh_database, mariadb_available, postgres_available
from .peers import PEERS
from .report import render
from .stores import (
    Convodb,
    LimitMariaDB,
    LimitPostgres,
    LimitSqlite,
    RawMariaDB,
    RawPostgres,
    RawSqlite,
    Store,
)

RAW: dict[str, type[Store]] = {
    "sqlite": RawSqlite,
    "postgresql": RawPostgres,
    "mariadb": RawMariaDB,
}
LIMIT: dict[str, type[Store]] = {
    "sqlite": LimitSqlite,
    "postgresql": LimitPostgres,
    "mariadb": LimitMariaDB,
}
AVAILABLE = {"postgresql": postgres_available, "mariadb": mariadb_available}
"""Servers that may be unreachable: their half of the run is skipped, with the reason."""


@dataclass(frozen=True)
class Sizes:
    rounds: int
    appends: int
    batches: int
    reads: int
    cap_s: float
    conversations: int
    per_conversation: int
    big: int
    token_conversation: int
    growth_small: int  # conversations of per_conversation messages in the small table
    growth_large: int  # conversations in the large table (0: use the main data set)
    writers: int
    per_writer: int
    rss_messages: int
    max_tokens: int


QUICK = Sizes(
    rounds=3,
    appends=100,
    batches=20,
    reads=80,
    cap_s=0.5,
    conversations=500,
    per_conversation=100,
    big=20_000,
    token_conversation=100_000,
    growth_small=20,
    growth_large=0,
    writers=20,
    per_writer=8,
    rss_messages=3_000,
    max_tokens=4000,
)
FULL = Sizes(
    rounds=3,
    appends=1000,
    batches=200,
    reads=1000,
    cap_s=6.0,
    conversations=2000,
    per_conversation=100,
    big=20_000,
    token_conversation=100_000,
    growth_small=20,
    growth_large=10_000,
    writers=20,
    per_writer=100,
    rss_messages=1_000_000,
    max_tokens=4000,
)


def _versions() -> dict[str, str]:
    out = {}
    for dist in (
        "convodb",
        "sqlalchemy",
        "asyncpg",
        "aiosqlite",
        "asyncmy",
        "openai-agents",
        "langchain-community",
        "langchain-core",
        "llama-index-core",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "?")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def opened(store: Store) -> AsyncIterator[Store]:
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _create_core_schema(target: Target) -> None:
    from convodb import Database

    async with Database(target.convodb_url) as db:
        await db.create_all()


class Bench:
    def __init__(self, sizes: Sizes, store_names: set[str] | None, per_request: bool) -> None:
        self.s = sizes
        self.store_names = store_names
        self.per_request = per_request

    def classes(self, dialect: str) -> list[type[Store]]:
        yardsticks = (RAW[dialect], LIMIT[dialect])
        chosen: list[type[Store]] = [*yardsticks, Convodb, *PEERS]
        return [
            c
            for c in chosen
            if dialect in c.dialects
            and (
                c in yardsticks
                or (self.store_names is not None and c.name in self.store_names)
                or (self.store_names is None and (self.per_request or not c.per_request))
            )
        ]

    async def dialect(self, dialect: str) -> dict[str, Any]:
        s = self.s
        out: dict[str, dict[str, Any]] = {}
        async with contextlib.AsyncExitStack() as stack:
            stores: list[Store] = []
            for group_classes in _by_group(self.classes(dialect)):
                target = await stack.enter_async_context(fresh_database(dialect))
                if group_classes[0].group == "core":
                    await _create_core_schema(target)
                group = [await stack.enter_async_context(opened(c(target))) for c in group_classes]
                started = time.perf_counter()
                data = [(f"r{i:06d}", s.per_conversation) for i in range(s.conversations)]
                data.append(("big", s.big))
                if group[0].group == "core":
                    data.append(("tok", s.token_conversation))
                await group[0].bulk_load(data, first=0)
                for store in group:
                    await store.warm([cid for cid, _ in data])
                log(
                    f"{dialect}: loaded {sum(n for _, n in data):,} messages for "
                    f"{', '.join(x.name for x in group)} in {time.perf_counter() - started:.1f}s"
                )
                stores.extend(group)
            cids = [f"r{i:06d}" for i in range(s.conversations)]
            rounds: dict[str, dict[str, list[w.Result]]] = {}

            async def each_round(name: str, run: Any, only: Sequence[Store] | None = None) -> None:
                for r in range(s.rounds):
                    for store in only or stores:
                        result = await run(store, f"{r}-{stores.index(store)}")
                        rounds.setdefault(name, {}).setdefault(store.name, []).append(result)
                log(f"{dialect}: {name} done")

            writers = [x for x in stores if x.writes]  # not the read-only ``limit``
            await each_round(
                "append_single",
                lambda st, r: w.append(st, f"a1-{r}", s.appends, 1, s.cap_s),
                writers,
            )
            await each_round(
                "append_batch10",
                lambda st, r: w.append(st, f"a10-{r}", s.batches, 10, s.cap_s),
                writers,
            )
            await each_round(
                "latest50_random",
                lambda st, r: w.latest(st, cids, s.reads, s.cap_s, seed=hash(r) % 1000),
            )
            await each_round(
                "latest50_20k",
                lambda st, r: w.latest(st, ["big"], s.reads, s.cap_s, seed=hash(r) % 1000),
            )
            await each_round(
                "concurrent20",
                lambda st, r: w.concurrent(st, f"cw-{r}", s.writers, s.per_writer, s.cap_s * 10),
                writers,
            )
            core = [x for x in stores if x.group == "core"]
            await each_round(
                "token_window",
                lambda st, r: w.window(st, "tok", s.reads // 3, s.cap_s, s.max_tokens),
                core,
            )
            await each_round(
                "latest50_100k",
                lambda st, r: w.latest(st, ["tok"], s.reads // 3, s.cap_s, seed=r),
                core,
            )
            out = {name: _medians(per_store) for name, per_store in rounds.items()}
            out["growth"] = await self.growth(dialect, core, cids)
            convodb = next((x for x in core if x.name == "convodb"), None)
            if convodb is not None:
                out["memory"] = {
                    # 100 messages per conversation: 10,000 conversations in the full run,
                    # so that a cache per conversation would show.
                    "convodb": await w.memory(
                        convodb, "m", s.rss_messages, s.rss_messages // 100, s.cap_s * 60
                    )
                }
                log(f"{dialect}: memory done")
        return out

    async def growth(self, dialect: str, core: list[Store], cids: list[str]) -> dict[str, Any]:
        """latest-50 of a 100-message conversation in a small table and in big ones."""
        s = self.s
        small_cids = [f"g{i:06d}" for i in range(s.growth_small)]
        result: dict[str, Any] = {}
        async with fresh_database(dialect) as target:
            await _create_core_schema(target)
            small = [type(x)(target) for x in core]
            async with contextlib.AsyncExitStack() as stack:
                for x in small:
                    await stack.enter_async_context(opened(x))
                await small[0].bulk_load([(c, s.per_conversation) for c in small_cids], first=0)
                sizes = {"small": s.growth_small * s.per_conversation}
                measured: dict[str, dict[str, list[w.Result]]] = {}
                for r in range(s.rounds):
                    for x in small:
                        res = await w.latest(x, small_cids, s.reads, s.cap_s, seed=r)
                        measured.setdefault("small", {}).setdefault(x.name, []).append(res)
                    for x in core:
                        res = await w.latest(x, cids, s.reads, s.cap_s, seed=r)
                        measured.setdefault("main", {}).setdefault(x.name, []).append(res)
        sizes["main"] = s.conversations * s.per_conversation + s.big + s.token_conversation
        if s.growth_large:
            extra = [
                (f"x{i:06d}", s.per_conversation) for i in range(s.growth_large - s.conversations)
            ]
            started = time.perf_counter()
            await core[0].bulk_load(extra, first=5_000_000)
            log(
                f"{dialect}: grew the table by {len(extra) * s.per_conversation:,} messages in "
                f"{time.perf_counter() - started:.1f}s"
            )
            all_cids = cids + [c for c, _ in extra]
            for r in range(s.rounds):
                for x in core:
                    res = await w.latest(x, all_cids, s.reads, s.cap_s, seed=r)
                    measured.setdefault("large", {}).setdefault(x.name, []).append(res)
            sizes["large"] = sizes["main"] + len(extra) * s.per_conversation
        for size, per_store in measured.items():
            result[size] = {"total_messages": sizes[size], **_medians(per_store)}
        log(f"{dialect}: growth done")
        return result


def _by_group(classes: list[type[Store]]) -> list[list[type[Store]]]:
    groups: dict[str, list[type[Store]]] = {}
    for c in classes:
        groups.setdefault(c.group, []).append(c)
    return list(groups.values())


def _medians(per_store: dict[str, list[w.Result]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, rounds in per_store.items():
        rounds = [r for r in rounds if r]
        if not rounds:
            out[name] = {}
            continue
        keys = [k for k, v in rounds[0].items() if isinstance(v, int | float)]
        summary: dict[str, Any] = {k: w.median_of(rounds, k) for k in keys}
        for k in ("lost", "duplicated", "misordered", "inserted_behind", "errors"):
            if k in rounds[0]:
                summary[k] = sum(r[k] for r in rounds)  # any anomaly in any round counts
        summary["rounds"] = rounds
        out[name] = summary
    return out


async def _main(args: argparse.Namespace) -> int:
    from . import http_bench

    sizes = QUICK if args.quick else FULL
    bench = Bench(
        sizes,
        set(args.stores.split(",")) if args.stores else None,
        per_request=not args.quick or args.per_request,
    )
    results: dict[str, Any] = {
        "meta": {**machine(), "mode": "quick" if args.quick else "full", "sizes": vars(sizes)},
        "results": {},
    }
    started = time.perf_counter()
    for dialect in args.db.split(","):
        available = AVAILABLE.get(dialect)
        if available is not None and (why := await available()) is not None:
            log(f"{dialect}: skipped ({why})")
            results["results"][dialect] = {"skipped": why}
            continue
        results["results"][dialect] = await bench.dialect(dialect)
    # The HTTP part has no MariaDB yardstick: it runs on SQLite and PostgreSQL only.
    reachable = [
        d for d, r in results["results"].items() if "skipped" not in r and d in http_bench.DIALECTS
    ]
    if reachable:
        results["http"] = await http_bench.run(args.quick, reachable)
    else:
        results["http"] = {"note": f"n/a: runs on {', '.join(http_bench.DIALECTS)} only"}
    results["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    text = render(results)
    print(text)
    if args.json:
        await asyncio.to_thread(_write_json, Path(args.json), results)
        log(f"results written to {args.json}")
    return 0


def _write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke-sized run, under 2 minutes")
    parser.add_argument(
        "--db",
        default="sqlite,postgresql,mariadb",
        help=f"comma-separated databases among {', '.join(RAW)}",
    )
    parser.add_argument(
        "--stores",
        default=None,
        help="comma-separated store names to run besides raw and limit (default: all)",
    )
    parser.add_argument(
        "--per-request",
        action="store_true",
        help="with --quick: also the peers' per-request rows (the full run always has them)",
    )
    parser.add_argument(
        "--json", default="benchmarks/results/latest.json", help="where to write the JSON results"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.db.split(",")) - set(RAW))
    if unknown:
        parser.error(
            f"--db: unknown database(s) {', '.join(unknown)}; choose among {', '.join(RAW)}"
        )
    return asyncio.run(_main(args))
