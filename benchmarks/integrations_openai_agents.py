"""The OpenAI Agents SDK adapter: ``ConvodbSession`` against the SDK's own sessions.

For each database, each store gets a fresh database of its own and one session, loaded with
``--history`` turns through its own ``add_items``; then, in ``--rounds`` interleaved rounds
(convodb, SQLiteSession, SQLAlchemySession, convodb, ...), each store appends one turn (one
``add_items`` call with a user message, a function call, its output and the answer, the
shapes the SDK writes) and reads ``get_items(limit=50)``. The table shows p50 and p99 per
operation and the ratio of convodb's p50 to each peer's.

Stores: ``ConvodbSession`` (one instance; it holds no connection, each call takes a pooled
one), the SDK's ``SQLiteSession`` (SQLite only; one long-lived handle: its best usage) and
``SQLAlchemySession`` (``agents.extensions.memory``; one handle on one engine; SQLite and
PostgreSQL: on MariaDB it cannot create its tables, a ``String`` column without a length).
On MariaDB convodb runs alone.

```sh
.venv/bin/python -m benchmarks.integrations_openai_agents                  # all three databases
.venv/bin/python -m benchmarks.integrations_openai_agents --db sqlite --rounds 100
```
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._data import Target, content_for, fresh_database
from ._rounds import ms, run_cli

RESULTS = Path(__file__).parent / "results" / "integrations-openai-agents.md"
LIMIT = 50


def turn(n: int) -> list[dict[str, Any]]:
    """One turn as the SDK stores it: input, the call, its output, the answer."""
    call_id = f"call_{n}"
    return [
        {"role": "user", "content": content_for(4 * n)},
        {
            "arguments": f'{{"city":"c{n}"}}',
            "call_id": call_id,
            "name": "get_weather",
            "type": "function_call",
            "id": f"fc_{n}",
            "status": "completed",
        },
        {"call_id": call_id, "output": content_for(4 * n + 1), "type": "function_call_output"},
        {
            "id": f"msg_{n}",
            "content": [
                {
                    "annotations": [],
                    "text": content_for(4 * n + 2),
                    "type": "output_text",
                    "logprobs": [],
                }
            ],
            "role": "assistant",
            "status": "completed",
            "type": "message",
        },
    ]


@dataclass
class Store:
    name: str
    session: Any
    add: list[float] = field(default_factory=list)
    get: list[float] = field(default_factory=list)


@contextlib.asynccontextmanager
async def convodb_store(target: Target) -> AsyncIterator[Store]:
    from convodb import Database
    from convodb.integrations.openai_agents import ConvodbSession

    async with Database(target.convodb_url) as db:
        await db.create_all()
        yield Store("convodb ConvodbSession", ConvodbSession("bench", database=db, user_id="u"))


@contextlib.asynccontextmanager
async def sqlite_store(target: Target) -> AsyncIterator[Store]:
    from agents import SQLiteSession

    session = SQLiteSession("bench", db_path=target.path)
    try:
        yield Store("SDK SQLiteSession (shared)", session)
    finally:
        session.close()


@contextlib.asynccontextmanager
async def sqlalchemy_store(target: Target) -> AsyncIterator[Store]:
    from agents.extensions.memory import SQLAlchemySession
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(target.sqlalchemy_url)
    try:
        session = SQLAlchemySession("bench", engine=engine, create_tables=True)
        yield Store("SDK SQLAlchemySession (shared)", session)
    finally:
        await engine.dispose()


Opener = Callable[[Target], contextlib.AbstractAsyncContextManager[Store]]
STORES: dict[str, tuple[Opener, tuple[str, ...]]] = {
    "convodb": (convodb_store, ("sqlite", "postgresql", "mariadb")),
    "sqlite-session": (sqlite_store, ("sqlite",)),
    "sqlalchemy-session": (sqlalchemy_store, ("sqlite", "postgresql")),
}


async def timed(samples: list[float], call: Awaitable[Any]) -> Any:
    started = time.perf_counter()
    result = await call
    samples.append(time.perf_counter() - started)
    return result


async def run_dialect(dialect: str, history: int, rounds: int) -> list[Store]:
    async with contextlib.AsyncExitStack() as stack:
        stores = []
        for opener, dialects in STORES.values():
            if dialect in dialects:
                target = await stack.enter_async_context(fresh_database(dialect))
                stores.append(await stack.enter_async_context(opener(target)))
        for store in stores:
            for n in range(history):
                await store.session.add_items(turn(n))
        for r in range(rounds):
            for store in stores:
                await timed(store.add, store.session.add_items(turn(history + r)))
            for store in stores:
                items = await timed(store.get, store.session.get_items(limit=LIMIT))
                if len(items) != LIMIT:
                    raise RuntimeError(f"{store.name} returned {len(items)} items, not {LIMIT}")
        return stores


def table(results: dict[str, list[Store]]) -> str:
    lines = [
        "| database | store | add_items (1 turn) p50 | p99 | get_items(50) p50 | p99 "
        "| convodb / store, add p50 | get p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dialect, stores in results.items():
        ours = stores[0]
        for store in stores:
            add50, get50 = statistics.median(store.add) * 1000, statistics.median(store.get) * 1000
            ratio_add = statistics.median(ours.add) / statistics.median(store.add)
            ratio_get = statistics.median(ours.get) / statistics.median(store.get)
            lines.append(
                f"| {dialect} | {store.name} | {add50:.2f} ms | {ms(store.add, 0.99):.2f} ms "
                f"| {get50:.2f} ms | {ms(store.get, 0.99):.2f} ms "
                f"| {ratio_add:.2f}x | {ratio_get:.2f}x |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(
        argv,
        module="integrations_openai_agents",
        description=__doc__,
        default_db="sqlite,postgresql,mariadb",
        results=RESULTS,
        run_dialect=run_dialect,
        table=table,
        title="OpenAI Agents SDK sessions: ConvodbSession vs the SDK's own",
        loaded="4 items",
        explanation=(
            "One round: every store appends one turn (one `add_items` of a user message, a "
            "function call, its output and the answer), then every store reads "
            "`get_items(limit=50)`. Ratios are convodb's p50 over the store's p50 "
            "(below 1: convodb is faster). Each store has a fresh database of its own on the "
            "same server; the machine is shared, so compare ratios within one run."
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
