"""ConvodbSaver under real LangGraph graphs, on every database: the conversation holds the
graph's messages once each, and the graph sees what LangGraph's InMemorySaver gives it."""

from __future__ import annotations

import asyncio
import operator
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.prebuilt import ToolNode, tools_condition

from convodb import ConversationNotFoundError, ConversationService, Database, ValidationError
from convodb.integrations._ids import conversation_id_for
from convodb.integrations.langgraph import ConvodbSaver


class ScriptedModel(BaseChatModel):
    """Answers with the next canned reply and records what it was sent."""

    replies: list[AIMessage]
    received: list[list[BaseMessage]] = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.received.append(list(messages))
        reply = self.replies[len(self.received) - 1]
        return ChatResult(generations=[ChatGeneration(message=reply)])


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def agent_graph(model: ScriptedModel, checkpointer: BaseCheckpointSaver[Any]) -> Any:
    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([get_weather]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer)


SCRIPT = [
    AIMessage(
        "",
        id="ai-1",
        tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call-1"}],
        usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        response_metadata={"model_name": "scripted-1", "finish_reason": "tool_calls"},
    ),
    AIMessage("It is sunny in Paris.", id="ai-2", response_metadata={"finish_reason": "stop"}),
    AIMessage("You asked about Paris.", id="ai-3", additional_kwargs={"refusal": None}),
]


@pytest.fixture
async def saver(db: Database) -> AsyncIterator[ConvodbSaver]:
    saver = ConvodbSaver(database=db, user_id="alice")
    yield saver
    saver.close()


def thread(name: str) -> RunnableConfig:
    return {"configurable": {"thread_id": name}}


async def stored(db: Database, user_id: str, thread_id: str) -> list[Any]:
    cid = conversation_id_for("lg", user_id, thread_id)
    async with db.session() as session:
        page = await ConversationService(session).list_messages(cid, user_id, limit=1000)
    return page.items


async def test_agent_turns_are_stored_once_each_as_convodb_messages(
    db: Database, saver: ConvodbSaver
) -> None:
    model = ScriptedModel(replies=SCRIPT)
    graph = agent_graph(model, saver)

    await graph.ainvoke({"messages": [HumanMessage("Weather in Paris?", id="h-1")]}, thread("t1"))
    final = await graph.ainvoke(
        {"messages": [HumanMessage("What did I ask?", id="h-2")]}, thread("t1")
    )

    # Turn 3 (the second user turn) saw the whole history, tool call and result included.
    assert [m.id for m in model.received[2]] == [
        "h-1",
        "ai-1",
        final["messages"][2].id,
        "ai-2",
        "h-2",
    ]
    call = model.received[2][1]
    assert isinstance(call, AIMessage)
    assert call.tool_calls[0]["args"] == {"city": "Paris"}
    assert model.received[2][2].content == "sunny in Paris"
    rows = await stored(db, "alice", "t1")
    assert [(m.seq, m.role, m.key) for m in rows] == [
        (1, "user", "h-1"),
        (2, "assistant", "ai-1"),
        (3, "tool", final["messages"][2].id),
        (4, "assistant", "ai-2"),
        (5, "user", "h-2"),
        (6, "assistant", "ai-3"),
    ]
    assert [t.to_dict() for t in rows[1].tool_calls] == [
        {"id": "call-1", "name": "get_weather", "arguments": '{"city":"Paris"}'}
    ]
    assert (rows[2].tool_call_id, rows[2].tool_name, rows[2].content) == (
        "call-1",
        "get_weather",
        "sunny in Paris",
    )
    assert rows[5].content == "You asked about Paris."
    # The checkpoint gives back equal message objects, LangChain fields and all.
    state = await graph.aget_state(thread("t1"))
    assert state.values["messages"] == final["messages"]
    assert state.values["messages"][1].usage_metadata == SCRIPT[0].usage_metadata


async def test_history_matches_in_memory_saver(db: Database, saver: ConvodbSaver) -> None:
    class State(MessagesState):
        turns: Annotated[int, operator.add]
        notes: list[str]

    def bot(state: State) -> dict[str, Any]:
        n = len(state["messages"])
        return {
            "messages": [AIMessage(f"reply {n}", id=f"ai-{n}")],
            "turns": 1,
            "notes": [*state.get("notes", []), f"saw {n}"],
        }

    def graph_on(checkpointer: BaseCheckpointSaver[Any]) -> Any:
        builder = StateGraph(State)
        builder.add_node("bot", bot)
        builder.add_edge(START, "bot")
        builder.add_edge("bot", END)
        return builder.compile(checkpointer=checkpointer)

    async def run(graph: Any) -> None:
        config = thread("diff")
        await graph.ainvoke({"messages": [SystemMessage("be brief", id="s-1")]}, config)
        await graph.ainvoke({"messages": [HumanMessage("one", id="h-1", name="ann")]}, config)
        await graph.aupdate_state(config, {"messages": [HumanMessage("ONE", id="h-1")]})
        await graph.ainvoke({"messages": [HumanMessage("two", id="h-2")]}, config)
        await graph.aupdate_state(config, {"messages": [RemoveMessage(id="ai-3")]})
        await graph.ainvoke(
            {"messages": [HumanMessage([{"type": "text", "text": "three"}], id="h-3")]}, config
        )

    reference, ours = graph_on(InMemorySaver()), graph_on(saver)
    await run(reference)
    await run(ours)

    expected = [s.values async for s in reference.aget_state_history(thread("diff"))]
    actual = [s.values async for s in ours.aget_state_history(thread("diff"))]
    assert actual == expected
    assert len(actual) > 10
    rows = await stored(db, "alice", "diff")
    assert [m.key for m in rows] == [m.id for m in expected[0]["messages"]]


async def test_remove_message_removes_the_convodb_message(
    db: Database, saver: ConvodbSaver
) -> None:
    def prune(state: MessagesState) -> dict[str, Any]:
        return {"messages": [RemoveMessage(id=str(m.id)) for m in state["messages"][:-1]]}

    builder = StateGraph(MessagesState)
    builder.add_node("prune", prune)
    builder.add_edge(START, "prune")
    graph = builder.compile(checkpointer=saver)
    config = thread("prune")

    await graph.ainvoke({"messages": [HumanMessage("a", id="a"), AIMessage("b", id="b")]}, config)
    await graph.ainvoke({"messages": [HumanMessage("c", id="c")]}, config)

    assert [(m.seq, m.key) for m in await stored(db, "alice", "prune")] == [(3, "c")]
    history = [s.values["messages"] async for s in graph.aget_state_history(config)]
    # Older checkpoints still hold the messages removed since, from the saver's copies.
    assert [[m.content for m in messages] for messages in history] == [
        ["c"],
        ["b", "c"],
        ["b"],
        ["b"],
        ["a", "b"],
        [],
    ]
    await graph.aupdate_state(config, {"messages": [RemoveMessage(id=REMOVE_ALL_MESSAGES)]})
    assert await stored(db, "alice", "prune") == []
    assert (await graph.aget_state(config)).values["messages"] == []


async def test_message_replaced_in_place_is_stored_again_after_its_predecessors(
    db: Database, saver: ConvodbSaver
) -> None:
    builder = StateGraph(MessagesState)
    builder.add_node("noop", lambda state: {})
    builder.add_edge(START, "noop")
    graph = builder.compile(checkpointer=saver)
    config = thread("edit")
    msgs: list[Any] = [HumanMessage("a", id="a"), AIMessage("b", id="b"), HumanMessage("c", id="c")]
    await graph.ainvoke({"messages": msgs}, config)
    before = (await graph.aget_state(config)).config

    await graph.aupdate_state(config, {"messages": [AIMessage("B!", id="b")]})

    rows = await stored(db, "alice", "edit")
    assert [(m.seq, m.key, m.content) for m in rows] == [
        (1, "a", "a"),
        (4, "b", "B!"),
        (5, "c", "c"),
    ]
    assert [m.content for m in (await graph.aget_state(config)).values["messages"]] == [
        "a",
        "B!",
        "c",
    ]
    assert [m.content for m in (await graph.aget_state(before)).values["messages"]] == [
        "a",
        "b",
        "c",
    ]


async def test_messages_convodb_cannot_hold_stay_a_blob(db: Database, saver: ConvodbSaver) -> None:
    builder = StateGraph(MessagesState)
    builder.add_node("noop", lambda state: {})
    builder.add_edge(START, "noop")
    graph = builder.compile(checkpointer=saver)
    odd: list[Any] = [
        HumanMessage("hi", id="h"),
        ChatMessage(content="a critic's note", role="critic", id="c"),
        AIMessage("x", id="x", additional_kwargs={"raw": b"\x00bytes"}),
    ]

    await graph.ainvoke({"messages": odd}, thread("odd"))

    assert (await graph.aget_state(thread("odd"))).values["messages"] == odd
    assert await stored(db, "alice", "odd") == []


async def test_delete_thread_deletes_the_conversation(db: Database, saver: ConvodbSaver) -> None:
    graph = agent_graph(ScriptedModel(replies=SCRIPT), saver)
    await graph.ainvoke({"messages": [HumanMessage("Weather?", id="h-1")]}, thread("gone"))

    await saver.adelete_thread("gone")

    cid = conversation_id_for("lg", "alice", "gone")
    async with db.session() as session:
        with pytest.raises(ConversationNotFoundError):
            await ConversationService(session).get_conversation(cid, "alice")
    assert await saver.aget_tuple(thread("gone")) is None
    assert [t async for t in saver.alist(thread("gone"))] == []


async def test_threads_are_per_user(db: Database, saver: ConvodbSaver) -> None:
    bob = ConvodbSaver(database=db, user_id="bob")
    builder = StateGraph(MessagesState)
    builder.add_node("noop", lambda state: {})
    builder.add_edge(START, "noop")
    alice_graph = builder.compile(checkpointer=saver)
    bob_graph = builder.compile(checkpointer=bob)

    await alice_graph.ainvoke({"messages": [HumanMessage("alice's", id="a")]}, thread("default"))

    assert await bob.aget_tuple(thread("default")) is None
    assert [t async for t in bob.alist(None)] == []
    await bob_graph.ainvoke({"messages": [HumanMessage("bob's", id="b")]}, thread("default"))
    await bob.adelete_thread("default")
    state = await alice_graph.aget_state(thread("default"))
    assert [m.content for m in state.values["messages"]] == ["alice's"]
    assert {t.config["configurable"]["thread_id"] async for t in saver.alist(None)} == {"default"}


async def test_copy_thread_copies_messages_and_history(db: Database, saver: ConvodbSaver) -> None:
    builder = StateGraph(MessagesState)
    builder.add_node("noop", lambda state: {})
    builder.add_edge(START, "noop")
    graph = builder.compile(checkpointer=saver)
    await graph.ainvoke(
        {"messages": [HumanMessage("a", id="a"), AIMessage("b", id="b")]}, thread("src")
    )
    await graph.aupdate_state(thread("src"), {"messages": [RemoveMessage(id="a")]})

    await saver.acopy_thread("src", "dst")

    source = [s.values async for s in graph.aget_state_history(thread("src"))]
    copied = [s.values async for s in graph.aget_state_history(thread("dst"))]
    assert copied == source
    assert [(m.seq, m.key) for m in await stored(db, "alice", "dst")] == [(1, "b")]
    await graph.ainvoke({"messages": [HumanMessage("c", id="c")]}, thread("dst"))
    assert [m.key for m in await stored(db, "alice", "dst")] == ["b", "c"]
    assert [m.key for m in await stored(db, "alice", "src")] == ["b"]


async def test_prune_keeps_what_the_latest_checkpoint_reads(
    db: Database, saver: ConvodbSaver
) -> None:
    builder = StateGraph(MessagesState)
    builder.add_node("noop", lambda state: {})
    builder.add_edge(START, "noop")
    graph = builder.compile(checkpointer=saver)
    config = thread("pruned")
    await graph.ainvoke({"messages": [HumanMessage("a", id="a")]}, config)
    await graph.aupdate_state(config, {"messages": [AIMessage("b", id="b")]})
    await graph.aupdate_state(config, {"messages": [RemoveMessage(id="a")]})
    latest = await graph.aget_state(config)

    await saver.aprune(["pruned"])

    assert [s.values async for s in graph.aget_state_history(config)] == [latest.values]
    with pytest.raises(ValidationError, match="strategy"):
        await saver.aprune(["pruned"], strategy="everything")


async def test_bad_config_names_the_field(saver: ConvodbSaver) -> None:
    with pytest.raises(ValidationError, match="thread_id"):
        await saver.aget_tuple({"configurable": {}})
    with pytest.raises(ValidationError, match="checkpoint_ns"):
        await saver.aget_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": "n" * 300}})


async def test_sync_method_on_the_savers_own_loop_raises(saver: ConvodbSaver) -> None:
    async def call_sync() -> None:
        saver.get_tuple(thread("t"))

    with pytest.raises(asyncio.InvalidStateError, match="async method"):
        saver._loop.run(call_sync())


def test_sync_invoke_outside_and_after_an_event_loop(database_url: str) -> None:
    db = Database(database_url)
    asyncio.run(_prepare(db))
    saver = ConvodbSaver(database=db, user_id="sync-user")
    try:
        model = ScriptedModel(replies=SCRIPT)
        graph = agent_graph(model, saver)
        graph.invoke({"messages": [HumanMessage("Weather in Paris?", id="h-1")]}, thread("sync"))
        asyncio.run(asyncio.sleep(0))  # an event loop came and went in this thread
        result = graph.invoke(
            {"messages": [HumanMessage("What did I ask?", id="h-2")]}, thread("sync")
        )

        assert [m.id for m in result["messages"]][-2:] == ["h-2", "ai-3"]
        assert len(saver.get_tuple(thread("sync")).checkpoint["channel_values"]["messages"]) == 6  # type: ignore[union-attr]
        assert len(list(saver.list(thread("sync")))) == len(
            list(graph.get_state_history(thread("sync")))
        )
        keys = [m.key for m in saver._loop.run(stored(db, "sync-user", "sync"))]
        assert keys == [m.id for m in result["messages"]]
        saver.delete_thread("sync")
        assert saver.get_tuple(thread("sync")) is None
    finally:
        saver._loop.run(db.dispose())
        saver.close()


async def _prepare(db: Database) -> None:
    await db.create_all()
    await db.dispose()


async def test_durability_exit_stores_the_turn_from_its_one_checkpoint(
    db: Database, saver: ConvodbSaver
) -> None:
    model = ScriptedModel(replies=SCRIPT)
    graph = agent_graph(model, saver)

    final = await graph.ainvoke(
        {"messages": [HumanMessage("Weather in Paris?", id="h-1")]},
        thread("exit"),
        durability="exit",
    )

    rows = await stored(db, "alice", "exit")
    assert [(m.seq, m.key) for m in rows] == [
        (i + 1, m.id) for i, m in enumerate(final["messages"])
    ]
    assert len([t async for t in saver.alist(thread("exit"))]) == 1
    assert rows[0].conversation_id == saver.conversation_id("exit")
