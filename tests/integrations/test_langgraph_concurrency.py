"""ConvodbSaver with more than one writer, and at sizes past one append, on every database:
every write of a thread holds its lock, so concurrent writers apply one after the other."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, empty_checkpoint
from langgraph.graph import START, MessagesState, StateGraph

from convodb import ConversationService, Database
from convodb._service import _checkpoints as store
from convodb.integrations.langgraph import ConvodbSaver


def thread(name: str, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": name, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def checkpoint(number: int, **values: Any) -> Checkpoint:
    made = empty_checkpoint()
    made["id"] = f"{number:032}"
    made["channel_values"] = values
    made["channel_versions"] = {name: f"{number:032}.0" for name in values}
    return made


def echo_graph(saver: ConvodbSaver) -> Any:
    def bot(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(f"echo {len(state['messages'])}", id=str(uuid.uuid4()))]}

    builder = StateGraph(MessagesState)
    builder.add_node("bot", bot)
    builder.add_edge(START, "bot")
    return builder.compile(checkpointer=saver)


@pytest.fixture
async def saver(db: Database) -> AsyncIterator[ConvodbSaver]:
    yield ConvodbSaver(database=db, user_id="alice")


async def test_a_put_beside_delete_for_runs_keeps_its_checkpoint_whole(
    saver: ConvodbSaver, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = thread("t")
    first = await saver.aput(config, checkpoint(1, a="one"), {"run_id": "old"}, {"a": f"{1:032}.0"})
    await saver.aput(first, checkpoint(2, a="two"), {"run_id": "new"}, {"a": f"{2:032}.0"})
    # The collection reads what the remaining checkpoints use, then deletes the rest: hold it
    # between the two, long enough for a put to commit a new checkpoint, unless it waits.
    remaining = store.remaining_checkpoints

    async def slow_remaining(*args: Any) -> Any:
        found = await remaining(*args)
        await asyncio.sleep(0.5)
        return found

    monkeypatch.setattr(store, "remaining_checkpoints", slow_remaining)
    third = checkpoint(3, a="three", b=[1, 2])
    versions: dict[str, str | int | float] = {"a": f"{3:032}.0", "b": f"{3:032}.0"}

    async def put_meanwhile() -> None:
        await asyncio.sleep(0.1)  # the deletion has begun
        await saver.aput(thread("t"), third, {"run_id": "newer"}, versions)

    await asyncio.gather(saver.adelete_for_runs(["old"]), put_meanwhile())

    latest = await saver.aget_tuple(thread("t"))
    assert latest is not None
    assert latest.checkpoint["id"] == third["id"]
    assert latest.checkpoint["channel_values"] == {"a": "three", "b": [1, 2]}


async def test_prune_beside_a_put_keeps_the_newest_checkpoint(
    saver: ConvodbSaver, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await saver.aput(thread("t"), checkpoint(1, a=1), {}, {"a": f"{1:032}.0"})
    await saver.aput(first, checkpoint(2, a=2), {}, {"a": f"{2:032}.0"})
    latest_per_namespace = store.latest_per_namespace

    async def slow_latest(*args: Any) -> Any:
        found = await latest_per_namespace(*args)
        await asyncio.sleep(0.5)
        return found

    monkeypatch.setattr(store, "latest_per_namespace", slow_latest)

    async def put_meanwhile() -> None:
        await asyncio.sleep(0.1)
        await saver.aput(thread("t"), checkpoint(3, a=3), {}, {"a": f"{3:032}.0"})

    await asyncio.gather(saver.aprune(["t"]), put_meanwhile())

    latest = await saver.aget_tuple(thread("t"))
    assert latest is not None and latest.checkpoint["channel_values"] == {"a": 3}


async def test_identical_concurrent_writes_store_once(db: Database) -> None:
    savers = [ConvodbSaver(database=db, user_id="alice") for _ in range(4)]
    config = await savers[0].aput(thread("t"), checkpoint(1, a=1), {}, {"a": f"{1:032}.0"})
    writes = [("a", 2), ("b", "x")]

    await asyncio.gather(*(s.aput_writes(config, writes, "task-1") for s in savers))
    same = checkpoint(2, a=2)
    await asyncio.gather(*(s.aput(config, same, {}, {"a": f"{2:032}.0"}) for s in savers))

    stored = await savers[0].aget_tuple(config)
    assert stored is not None and stored.pending_writes == [
        ("task-1", "a", 2),
        ("task-1", "b", "x"),
    ]
    latest = await savers[0].aget_tuple(thread("t"))
    assert latest is not None and latest.checkpoint["channel_values"] == {"a": 2}


async def test_a_thread_past_one_append_keeps_mirroring_its_messages(
    db: Database, saver: ConvodbSaver
) -> None:
    graph = echo_graph(saver)
    many = [HumanMessage(f"m{i}", id=f"m{i}") for i in range(1500)]

    await graph.ainvoke({"messages": many}, thread("long"))
    await graph.ainvoke({"messages": [HumanMessage("one more", id="last")]}, thread("long"))

    state = await graph.aget_state(thread("long"))
    assert len(state.values["messages"]) == 1503
    async with db.session() as session:
        held = await ConversationService(session).get_conversation(
            saver.conversation_id("long"), "alice"
        )
    assert held.message_count == held.last_seq == 1503


def test_sync_graphs_beside_async_work_on_one_database(db: Database) -> None:
    """The sync methods run on the saver's own event loop, on a clone of the database: the
    application's loop keeps using the same Database meanwhile."""
    saver = ConvodbSaver(database=db, user_id="alice")
    graph = echo_graph(saver)

    async def app() -> None:
        loop = asyncio.get_running_loop()

        async def own_work(i: int) -> None:
            async with db.session() as session:
                service = ConversationService(session)
                conversation = await service.create_conversation("alice")
                await service.save_message(conversation.id, "user", f"hi {i}", user_id="alice")

        def sync_turn(i: int) -> Any:
            message = HumanMessage(f"q{i}", id=f"q{i}")
            return graph.invoke({"messages": [message]}, thread(f"sync-{i}"))

        await asyncio.gather(
            *(own_work(i) for i in range(10)),
            *(loop.run_in_executor(None, sync_turn, i) for i in range(10)),
        )
        await db.dispose()  # this loop's connections, closed before it ends

    try:
        asyncio.run(app())
        assert len(saver.get_tuple(thread("sync-3")).checkpoint["channel_values"]["messages"]) == 2  # type: ignore[union-attr]
    finally:
        saver.close()
