"""LlamaIndex's ``Memory`` on ``ConvodbChatStore``, end to end and offline, on every database.

A ``SimpleChatEngine`` with LlamaIndex's ``MockLLM`` (it answers ``"text"`` four times) talks
for several turns through a ``Memory`` with a small token limit, so that the memory's FIFO
flushes its oldest turns to the archive. The same conversation runs on a memory over
LlamaIndex's own ``SQLAlchemyChatStore``: what ``aget`` returns on every turn must agree,
and what convodb holds is checked through convodb's own API. The sync face (``put``/``get``)
runs outside any event loop, after an ``asyncio.run`` has ended, and inside a running loop.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock
from llama_index.core.bridge.pydantic import Field
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import MockLLM
from llama_index.core.memory import BaseMemoryBlock, Memory
from llama_index.core.storage.chat_store.base_db import AsyncDBChatStore, MessageStatus
from llama_index.core.storage.chat_store.sql import SQLAlchemyChatStore
from sqlalchemy.ext.asyncio import create_async_engine

from convodb import ConversationService, Database
from convodb.integrations.llama_index import ConvodbChatStore

ALICE = "alice"
SESSION = "support-42"


class Recorder(BaseMemoryBlock[str]):
    """A memory block that keeps what the memory flushes to it, and adds nothing."""

    flushed: list[ChatMessage] = Field(default_factory=list)

    async def _aget(self, messages: list[ChatMessage] | None = None, **kwargs: Any) -> str:
        return ""

    async def _aput(self, messages: list[ChatMessage]) -> None:
        self.flushed.extend(messages)


def memory_on(store: AsyncDBChatStore, *, blocks: list[Any] | None = None) -> Memory:
    # Words are tokens; 50 tokens at the default chat-history ratio of 0.7 leave 35 for the
    # queue, and a flush archives at least 10: a turn below is 6 + 4 words.
    return Memory.from_defaults(
        session_id=SESSION,
        chat_store=store,
        token_limit=50,
        token_flush_size=10,
        tokenizer_fn=str.split,
        memory_blocks=blocks or [],
    )


def question(n: int) -> str:
    return f"turn {n}: what about this one?"  # 6 words; MockLLM(max_tokens=4) answers 4


@pytest.fixture
async def reference(tmp_path: Path) -> AsyncIterator[SQLAlchemyChatStore]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'llama_index.db'}")
    try:
        yield SQLAlchemyChatStore(table_name="llama_index_memory", async_engine=engine)
    finally:
        await engine.dispose()


async def texts_in(db: Database, store: ConvodbChatStore, status: MessageStatus) -> list[str]:
    """What convodb holds for the session, read through convodb's own API."""
    async with db.session() as session:
        page = await ConversationService(session).list_messages(
            store.conversation_id(SESSION, status), ALICE, limit=1000
        )
    return [m.text for m in page.items]


async def test_a_chat_engine_conversation_flushes_old_turns_to_the_archive(
    db: Database, reference: SQLAlchemyChatStore
) -> None:
    store = ConvodbChatStore(database=db, user_id=ALICE)
    recorder = Recorder(name="recorder")
    mine, reference_memory = memory_on(store, blocks=[recorder]), memory_on(reference)
    ours = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=4), memory=mine)
    theirs = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=4), memory=reference_memory)
    answer = "text text text text"

    for n in range(1, 7):
        response = await ours.achat(question(n))
        assert str(response) == str(await theirs.achat(question(n))) == answer
        assert await mine.aget() == await reference_memory.aget()
        for status in (MessageStatus.ARCHIVED, None):
            assert await mine.aget_all(status) == await reference_memory.aget_all(status)
        if n == 3:  # 30 tokens: nothing flushed yet
            assert [m.content for m in await mine.aget()] == [
                question(1),
                answer,
                question(2),
                answer,
                question(3),
                answer,
            ]
            assert await store.count_messages(SESSION, MessageStatus.ARCHIVED) == 0

    # Each new question pushed the queue over 35 tokens, and the oldest whole turn went.
    history = await mine.aget()
    assert [(m.role, m.content) for m in history] == [
        (role, text)
        for n in (4, 5, 6)
        for role, text in (("user", question(n)), ("assistant", answer))
    ]
    assert await texts_in(db, store, MessageStatus.ACTIVE) == [m.content for m in history]
    assert await texts_in(db, store, MessageStatus.ARCHIVED) == [
        text for n in (1, 2, 3) for text in (question(n), answer)
    ]
    assert [m.content for m in recorder.flushed] == [
        text for n in (1, 2, 3) for text in (question(n), answer)
    ]
    assert await store.get_keys() == [SESSION]


async def test_a_tool_calling_turn_is_flushed_whole(
    db: Database, reference: SQLAlchemyChatStore
) -> None:
    store = ConvodbChatStore(database=db, user_id=ALICE)
    ours, theirs = memory_on(store), memory_on(reference)
    turn = [
        ChatMessage(role="user", content="weather in Paris, please?"),
        ChatMessage(
            role="assistant",
            blocks=[ToolCallBlock(tool_call_id="c1", tool_name="weather", tool_kwargs={"c": "P"})],
        ),
        ChatMessage(role="tool", content="18 sunny", additional_kwargs={"tool_call_id": "c1"}),
        ChatMessage(role="assistant", content="It is 18 and sunny."),
    ]

    for memory in (ours, theirs):
        await memory.aput_messages(turn)
        for n in (2, 3, 4):
            await memory.aput(ChatMessage(role="user", content=question(n)))
            await memory.aput(ChatMessage(role="assistant", content="fine fine fine fine"))

    assert await ours.aget() == await theirs.aget()
    assert await ours.aget_all(MessageStatus.ARCHIVED) == await theirs.aget_all(
        MessageStatus.ARCHIVED
    )
    assert await ours.aget_all(MessageStatus.ARCHIVED) == turn
    # The archived turn is still a valid tool-calling exchange for convodb's formats.
    async with db.session() as session:
        service = ConversationService(session)
        archived = store.conversation_id(SESSION, MessageStatus.ARCHIVED)
        window = await service.get_agent_input(archived, ALICE, format="openai-chat")
    assert [m["role"] for m in window.messages] == ["user", "assistant", "tool", "assistant"]
    assert window.messages[1]["tool_calls"][0]["id"] == "c1"


def _sync_session(db: Database) -> list[str]:
    """Memory's sync face in a thread of its own, as a script would use it: first with an
    event loop that is set but not running, then after ``asyncio.run`` has ended (none set)."""
    store = ConvodbChatStore(database=db, user_id=ALICE)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        memory = Memory.from_defaults(
            session_id=SESSION,
            chat_store=store,
            chat_history=[ChatMessage(role="system", content="Be brief.")],
            token_limit=50,
            token_flush_size=10,
            tokenizer_fn=str.split,
        )
        memory.put(ChatMessage(role="user", content=question(1)))
        memory.put(ChatMessage(role="assistant", content="one one one one"))
        seen = [str(m.content) for m in memory.get()]
    finally:
        asyncio.set_event_loop(None)
        loop.close()

    asyncio.run(memory.aput(ChatMessage(role="user", content=question(2))))
    memory.put(ChatMessage(role="assistant", content="two two two two"))
    for n in (3, 4):
        memory.put(ChatMessage(role="user", content=question(n)))
        memory.put(ChatMessage(role="assistant", content="more more more more"))
    seen += [str(m.content) for m in memory.get()]
    seen += [str(m.content) for m in memory.get_all(MessageStatus.ARCHIVED)]
    return seen


@asynccontextmanager
async def other_loops(db: Database) -> AsyncIterator[None]:
    """Lets the database be used on event loops that end. Their connections to PostgreSQL and
    MariaDB cannot be closed once their loop is closed; convodb lets them go, and the garbage
    collector closes their sockets and may say so with a ``ResourceWarning`` (as
    ``tests/test_lifecycle.py`` allows). Collected here, so that no later test hears of it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        finally:
            await db.dispose()
            gc.collect()


async def test_the_sync_api_works_outside_an_event_loop_and_after_asyncio_run(
    db: Database,
) -> None:
    async with other_loops(db):
        seen = await asyncio.to_thread(_sync_session, db)

    first = ["Be brief.", question(1), "one one one one"]
    # The system message (2 tokens) and turn 1 (10) went when turn 4's question arrived.
    now = [
        question(2),
        "two two two two",
        *(t for n in (3, 4) for t in (question(n), "more more more more")),
    ]
    assert seen == first + now + first
    store = ConvodbChatStore(database=db, user_id=ALICE)
    assert await texts_in(db, store, MessageStatus.ACTIVE) == now
    assert await texts_in(db, store, MessageStatus.ARCHIVED) == first


async def test_the_sync_api_works_inside_a_running_event_loop(db: Database) -> None:
    # LlamaIndex runs the coroutine on a loop of its own in a worker thread, while this loop
    # waits: the store must not depend on the loop its database was first used on.
    store = ConvodbChatStore(database=db, user_id=ALICE)
    memory = memory_on(store)
    await memory.aput(ChatMessage(role="user", content="async first"))

    async with other_loops(db):
        memory.put(ChatMessage(role="assistant", content="sync second"))
        assert [m.content for m in memory.get()] == ["async first", "sync second"]
    assert [m.content for m in await memory.aget()] == ["async first", "sync second"]
