"""The LangGraph checkpoint saver in a multi-turn chat: ConvodbSaver against LangGraph's own.

One chat graph (``MessagesState``, a node that answers each user message with a canned
~300-character reply) runs ``--turns`` turns on one thread per saver: LangGraph's
``InMemorySaver`` (no I/O: the floor), ``AsyncSqliteSaver`` from
``langgraph-checkpoint-sqlite`` when it is installed (a file, like convodb on SQLite), and
``ConvodbSaver`` on each database asked for. Every turn is one ``ainvoke`` (three
checkpoints: input, loop, and the node's writes). Reported per saver: the median turn over
the first and the last tenth of the turns (a saver that re-stores the history grows with
it), the median ``aget_state`` at the end, and each figure's ratio to ``InMemorySaver`` and
to ``AsyncSqliteSaver``.

```sh
.venv/bin/python -m benchmarks.integrations_langgraph                 # 200 turns, all databases
.venv/bin/python -m benchmarks.integrations_langgraph --turns 50 --db sqlite
```

``langgraph-checkpoint-sqlite`` is not a dependency of convodb; install it into the venv to
include it (``pip install langgraph-checkpoint-sqlite``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph

from convodb import Database
from convodb.integrations.langgraph import ConvodbSaver

from ._data import fresh_database

REPLY = "Sure. " + "Here is a sentence of a typical assistant answer, about this long. " * 4


@dataclass
class Result:
    name: str
    first: float  # median seconds of a turn, first tenth
    last: float  # median seconds of a turn, last tenth
    state: float  # median seconds of aget_state at the end


def _graph(checkpointer: BaseCheckpointSaver[Any]) -> Any:
    def bot(state: MessagesState) -> dict[str, Any]:
        n = len(state["messages"])
        return {"messages": [AIMessage(REPLY, id=f"ai-{n}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("bot", bot)
    builder.add_edge(START, "bot")
    return builder.compile(checkpointer=checkpointer)


async def _measure(name: str, saver: BaseCheckpointSaver[Any], turns: int) -> Result:
    graph = _graph(saver)
    config: Any = {"configurable": {"thread_id": "bench"}}
    times = []
    for turn in range(turns):
        message = HumanMessage(f"Question number {turn}: what about this?", id=f"h-{turn}")
        started = time.perf_counter()
        await graph.ainvoke({"messages": [message]}, config)
        times.append(time.perf_counter() - started)
    states = []
    for _ in range(20):
        started = time.perf_counter()
        state = await graph.aget_state(config)
        states.append(time.perf_counter() - started)
    assert len(state.values["messages"]) == 2 * turns
    tenth = max(turns // 10, 1)
    return Result(
        name,
        statistics.median(times[:tenth]),
        statistics.median(times[-tenth:]),
        statistics.median(states),
    )


@contextlib.asynccontextmanager
async def _convodb(dialect: str) -> AsyncIterator[ConvodbSaver]:
    async with fresh_database(dialect) as target:
        db = Database(target.convodb_url)
        await db.create_all()
        try:
            yield ConvodbSaver(database=db, user_id="bench")
        finally:
            await db.dispose()


@contextlib.asynccontextmanager
async def _sqlite_saver() -> AsyncIterator[BaseCheckpointSaver[Any] | None]:
    try:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    except ImportError:
        yield None
        return
    async with fresh_database("sqlite") as target:
        async with AsyncSqliteSaver.from_conn_string(target.path) as saver:
            yield saver


def _table(results: list[Result], reference: Callable[[str], Result | None]) -> str:
    memory = reference("InMemorySaver")
    sqlite = reference("AsyncSqliteSaver")
    lines = [
        "| saver | turn, first 10% (ms) | turn, last 10% (ms) | aget_state (ms) "
        "| last turn / InMemory | last turn / AsyncSqlite |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        vs_memory = f"{r.last / memory.last:.1f}x" if memory else "-"
        vs_sqlite = f"{r.last / sqlite.last:.2f}x" if sqlite else "-"
        lines.append(
            f"| {r.name} | {r.first * 1e3:.2f} | {r.last * 1e3:.2f} | {r.state * 1e3:.2f} "
            f"| {vs_memory} | {vs_sqlite} |"
        )
    return "\n".join(lines)


async def main(turns: int, dialects: list[str]) -> None:
    results = [await _measure("InMemorySaver", InMemorySaver(), turns)]
    async with _sqlite_saver() as sqlite_saver:
        if sqlite_saver is not None:
            results.append(await _measure("AsyncSqliteSaver", sqlite_saver, turns))
        else:
            print("langgraph-checkpoint-sqlite is not installed: AsyncSqliteSaver left out")
    for dialect in dialects:
        async with _convodb(dialect) as saver:
            results.append(await _measure(f"ConvodbSaver ({dialect})", saver, turns))
    by_name = {r.name: r for r in results}
    print(f"{turns} turns ({2 * turns} messages) on one thread\n")
    print(_table(results, by_name.get))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument(
        "--db",
        action="append",
        choices=["sqlite", "postgresql", "mariadb"],
        help="a database for ConvodbSaver (repeatable; default: all three)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.turns, args.db or ["sqlite", "postgresql", "mariadb"]))
