"""The LlamaIndex adapter: ``ConvodbChatStore`` against LlamaIndex's own ``SQLAlchemyChatStore``.

For each database, each store gets a fresh database of its own and one key, loaded with
``--history`` turns through its own ``add_messages``; then, in ``--rounds`` interleaved rounds
(convodb, SQLAlchemyChatStore, convodb, ...), each store

- appends one turn: one ``add_messages`` of a user message, an assistant message with a
  tool-call block, the tool's result and the answer (what a tool-using agent puts in
  ``Memory``);
- reads the latest page, oldest first: ``count_messages`` then
  ``get_messages(offset=count - 50, limit=50)`` (the interface pages from the oldest message,
  so that is how a caller asks for the newest 50), timed as one operation;
- archives its oldest turn: ``archive_oldest_messages(n=4)``, what ``Memory`` does when its
  token limit is reached, so the active queue keeps its size.

The table shows p50 and p99 per operation and the ratio of convodb's p50 to the store's.
``SQLAlchemyChatStore`` runs on SQLite and PostgreSQL; on MariaDB it cannot create its table
(a ``String`` key column without a length), so convodb runs alone there.

```sh
.venv/bin/python -m benchmarks.integrations_llama_index                 # SQLite and PostgreSQL
.venv/bin/python -m benchmarks.integrations_llama_index --db sqlite,postgresql,mariadb --rounds 100
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

RESULTS = Path(__file__).parent / "results" / "integrations-llama-index.md"
LIMIT = 50
KEY = "bench-session"
TURN = 4  # messages in one turn


def turn(n: int) -> list[Any]:
    """One tool-using turn as LlamaIndex's agents put it in memory."""
    from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock

    call_id = f"call_{n}"
    return [
        ChatMessage(role="user", content=content_for(4 * n)),
        ChatMessage(
            role="assistant",
            blocks=[
                ToolCallBlock(tool_call_id=call_id, tool_name="get_weather", tool_kwargs={"n": n})
            ],
        ),
        ChatMessage(
            role="tool",
            content=content_for(4 * n + 1),
            additional_kwargs={"tool_call_id": call_id, "name": "get_weather"},
        ),
        ChatMessage(role="assistant", content=content_for(4 * n + 2)),
    ]


@dataclass
class Store:
    name: str
    store: Any
    add: list[float] = field(default_factory=list)
    latest: list[float] = field(default_factory=list)
    archive: list[float] = field(default_factory=list)


@contextlib.asynccontextmanager
async def convodb_store(target: Target) -> AsyncIterator[Store]:
    from convodb import Database
    from convodb.integrations.llama_index import ConvodbChatStore

    async with Database(target.convodb_url) as db:
        await db.create_all()
        yield Store("convodb ConvodbChatStore", ConvodbChatStore(database=db, user_id="u"))


@contextlib.asynccontextmanager
async def sqlalchemy_store(target: Target) -> AsyncIterator[Store]:
    from llama_index.core.storage.chat_store.sql import SQLAlchemyChatStore
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(target.sqlalchemy_url)
    try:
        store = SQLAlchemyChatStore(table_name="llama_index_memory", async_engine=engine)
        yield Store("LlamaIndex SQLAlchemyChatStore (shared)", store)
    finally:
        await engine.dispose()


Opener = Callable[[Target], contextlib.AbstractAsyncContextManager[Store]]
STORES: dict[str, tuple[Opener, tuple[str, ...]]] = {
    "convodb": (convodb_store, ("sqlite", "postgresql", "mariadb")),
    "sqlalchemy": (sqlalchemy_store, ("sqlite", "postgresql")),
}


async def timed(samples: list[float], call: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    started = time.perf_counter()
    result = await call(*args)
    samples.append(time.perf_counter() - started)
    return result


async def latest_page(store: Any) -> list[Any]:
    count = await store.count_messages(KEY)
    return list(await store.get_messages(KEY, offset=max(count - LIMIT, 0), limit=LIMIT))


async def run_dialect(dialect: str, history: int, rounds: int) -> list[Store]:
    async with contextlib.AsyncExitStack() as stack:
        stores = []
        for opener, dialects in STORES.values():
            if dialect in dialects:
                target = await stack.enter_async_context(fresh_database(dialect))
                stores.append(await stack.enter_async_context(opener(target)))
        for each in stores:
            for n in range(history):
                await each.store.add_messages(KEY, turn(n))
        for r in range(rounds):
            new = turn(history + r)
            for each in stores:
                await timed(each.add, each.store.add_messages, KEY, new)
            pages = []
            for each in stores:
                pages.append(await timed(each.latest, latest_page, each.store))
            for each in stores:
                archived = await timed(each.archive, each.store.archive_oldest_messages, KEY, TURN)
                if archived != turn(r):
                    raise RuntimeError(f"{each.name} archived other messages than turn {r}")
            for each, page in zip(stores, pages, strict=True):
                if page != pages[0] or len(page) != LIMIT:
                    raise RuntimeError(f"{each.name} returned another latest page")
        return stores


OPERATIONS = (
    ("add_messages (1 turn)", "add"),
    ("latest page (count + get 50)", "latest"),
    ("archive_oldest_messages(4)", "archive"),
)


def table(results: dict[str, list[Store]]) -> str:
    lines = [
        "| database | operation | store | p50 | p99 | convodb / store, p50 |",
        "|---|---|---|---|---|---|",
    ]
    for dialect, stores in results.items():
        ours = stores[0]
        for label, attribute in OPERATIONS:
            for each in stores:
                samples: list[float] = getattr(each, attribute)
                ratio = statistics.median(getattr(ours, attribute)) / statistics.median(samples)
                lines.append(
                    f"| {dialect} | {label} | {each.name} "
                    f"| {statistics.median(samples) * 1000:.2f} ms | {ms(samples, 0.99):.2f} ms "
                    f"| {ratio:.2f}x |"
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(
        argv,
        module="integrations_llama_index",
        description=__doc__,
        default_db="sqlite,postgresql",
        results=RESULTS,
        run_dialect=run_dialect,
        table=table,
        title="LlamaIndex chat stores: ConvodbChatStore vs SQLAlchemyChatStore",
        loaded=f"{TURN} messages",
        explanation=(
            "One round: every store appends one turn (one `add_messages` of a user message, an "
            "assistant tool call, its result and the answer), then every store reads its latest "
            "page (`count_messages`, then `get_messages(offset=count - 50, limit=50)`, timed "
            "together), then every store archives its oldest turn "
            "(`archive_oldest_messages(n=4)`, which `Memory` calls when its token limit is "
            "reached). The pages and the archived messages of both stores are checked equal. "
            "convodb's archive is one transaction that locks the key's active conversation, "
            "removes the messages (returning them) and appends them to the archived "
            "conversation; SQLAlchemyChatStore's is a SELECT and an UPDATE of a status column, "
            "with no lock (two concurrent archives can return the same messages). "
            "Ratios are convodb's p50 over the store's p50 (below 1: convodb is faster). Each "
            "store has a fresh database of its own on the same server; the machine is shared, "
            "so compare ratios within one run."
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
