"""``ConvodbChatStore`` against LlamaIndex's own ``SQLAlchemyChatStore``, on every database.

``SQLAlchemyChatStore`` (SQLite, a file per test) is the reference: the same operations run on
both stores and their results must be equal, ``ChatMessage`` for ``ChatMessage``. LlamaIndex's
own tests of it (``llama-index-core/tests/storage/chat_store/test_sql.py``) are here as
differential tests, then a long seeded script of every operation, then what only convodb
promises: per-user keys, atomicity, typed errors, messages readable through convodb's API.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    AudioBlock,
    CacheControl,
    CachePoint,
    ChatMessage,
    DocumentBlock,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
    VideoBlock,
)
from llama_index.core.storage.chat_store.base_db import MessageStatus
from llama_index.core.storage.chat_store.sql import SQLAlchemyChatStore
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from convodb import (
    ConversationNotFoundError,
    ConversationService,
    Database,
    ImagePart,
    LimitExceededError,
    TextPart,
    ValidationError,
    format_messages,
)
from convodb.integrations.llama_index import ConvodbChatStore

ACTIVE, ARCHIVED = MessageStatus.ACTIVE, MessageStatus.ARCHIVED
ALICE, BOB = "alice", "bob"
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAABCAIAAAB7QOjdAAAADUlEQVR4nGP4z8AARAAI/gH/xp559wAAAABJRU5E"
    "rkJggg=="
)
PDF = "JVBERi0xLjQKMSAwIG9iajw8L1R5cGUvQ2F0YWxvZz4+ZW5kb2JqCnRyYWlsZXI8PC9Sb290IDEgMCBSPj4KJSVFT0YK"
# A WAV header with no samples: RIFF, size, WAVE, then an empty fmt-less body is enough for
# convodb's check, which reads the RIFF/WAVE tags.
WAV = base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt ").decode()


def msg(text: str, role: str = "user") -> ChatMessage:
    return ChatMessage(role=role, content=text)


def texts(messages: list[ChatMessage]) -> list[str | None]:
    return [m.content for m in messages]


@pytest.fixture
async def reference(tmp_path: Path) -> AsyncIterator[SQLAlchemyChatStore]:
    """LlamaIndex's own store on a SQLite file of its own."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'llama_index.db'}")
    try:
        yield SQLAlchemyChatStore(table_name="test_messages", async_engine=engine)
    finally:
        await engine.dispose()


@pytest.fixture
def store(db: Database) -> ConvodbChatStore:
    return ConvodbChatStore(database=db, user_id=ALICE)


class Both:
    """Runs each call on the reference store and on convodb's, and checks the results agree."""

    def __init__(self, reference: SQLAlchemyChatStore, store: ConvodbChatStore) -> None:
        self.reference, self.store = reference, store

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        expected = await getattr(self.reference, method)(*args, **kwargs)
        got = await getattr(self.store, method)(*args, **kwargs)
        if method == "get_keys":
            expected, got = sorted(expected), sorted(got)
        assert got == expected, f"{method}{args}{kwargs}"
        return got

    async def reference_ids(self, key: str) -> list[int]:
        """The reference's row ids of the key's messages, oldest first (as LlamaIndex's own
        test finds them: through the private table)."""
        table = self.reference._table
        assert table is not None and self.reference._async_session_factory is not None
        async with self.reference._async_session_factory() as session:
            rows = await session.execute(
                select(table.c.id).where(table.c.key == key).order_by(table.c.timestamp)
            )
            return [row[0] for row in rows]

    async def seqs(self, key: str, status: MessageStatus = ACTIVE) -> list[int]:
        """convodb's seqs of the key's messages of that status, oldest first."""
        async with self.store._database.session() as session:
            try:
                page = await ConversationService(session).list_messages(
                    self.store.conversation_id(key, status), ALICE, limit=1000
                )
            except ConversationNotFoundError:
                return []
        return [m.seq for m in page.items]


@pytest.fixture
def both(reference: SQLAlchemyChatStore, store: ConvodbChatStore) -> Both:
    return Both(reference, store)


# -- LlamaIndex's own tests of SQLAlchemyChatStore, run on both stores ---------------------


async def test_add_get_messages(both: Both) -> None:
    await both("add_message", "user1", msg("hello"))
    await both("add_message", "user1", msg("world", "assistant"))

    messages = await both("get_messages", "user1")

    assert [(m.role, m.content) for m in messages] == [("user", "hello"), ("assistant", "world")]
    assert await both("get_messages", "nonexistent") == []


async def test_add_messages_batch(both: Both) -> None:
    await both("add_messages", "batch_user", [msg("hello"), msg("world"), msg("how are you?")])

    assert texts(await both("get_messages", "batch_user")) == ["hello", "world", "how are you?"]


async def test_count_messages(both: Both) -> None:
    await both("add_messages", "count_user", [msg("message1"), msg("message2"), msg("message3")])

    assert await both("count_messages", "count_user") == 3
    assert await both("count_messages", "nonexistent") == 0


async def test_set_messages(both: Both) -> None:
    await both("add_message", "replace_user", msg("initial"))

    await both("set_messages", "replace_user", [msg("replaced1"), msg("replaced2", "assistant")])

    assert texts(await both("get_messages", "replace_user")) == ["replaced1", "replaced2"]


async def test_delete_message(both: Both) -> None:
    await both("add_messages", "delete_user", [msg("message1"), msg("message2"), msg("message3")])
    # An id is the reference's row id, and convodb's seq in the key's active conversation:
    # the same numbers while the key is the store's only one.
    ids = await both.reference_ids("delete_user")
    assert ids == await both.seqs("delete_user") == [1, 2, 3]

    deleted = await both("delete_message", "delete_user", ids[1])

    assert deleted.content == "message2"
    assert texts(await both("get_messages", "delete_user")) == ["message1", "message3"]
    assert await both("delete_message", "delete_user", ids[1]) is None
    assert await both("delete_message", "nonexistent", 1) is None


async def test_delete_messages(both: Both) -> None:
    await both("add_message", "delete_all_user1", msg("user1_message"))
    await both("add_message", "delete_all_user2", msg("user2_message"))

    await both("delete_messages", "delete_all_user1")

    assert await both("get_messages", "delete_all_user1") == []
    assert len(await both("get_messages", "delete_all_user2")) == 1


async def test_delete_oldest_messages(both: Both) -> None:
    await both("add_messages", "oldest_test", [msg("oldest"), msg("middle"), msg("newest")])

    deleted = await both("delete_oldest_messages", "oldest_test", 1)

    assert texts(deleted) == ["oldest"]
    assert texts(await both("get_messages", "oldest_test")) == ["middle", "newest"]


async def test_archive_oldest_messages(both: Both) -> None:
    await both("add_messages", "archive_test", [msg("oldest"), msg("middle"), msg("newest")])

    archived = await both("archive_oldest_messages", "archive_test", 1)

    assert texts(archived) == ["oldest"]
    assert texts(await both("get_messages", "archive_test", status=ACTIVE)) == ["middle", "newest"]
    assert texts(await both("get_messages", "archive_test", status=ARCHIVED)) == ["oldest"]


async def test_get_messages_with_limit_offset(both: Both) -> None:
    await both("add_messages", "pagination_test", [msg(f"message{i}") for i in range(1, 6)])

    assert texts(await both("get_messages", "pagination_test", limit=2)) == [
        "message1",
        "message2",
    ]
    assert texts(await both("get_messages", "pagination_test", offset=2)) == [
        "message3",
        "message4",
        "message5",
    ]
    assert texts(await both("get_messages", "pagination_test", limit=2, offset=1)) == [
        "message2",
        "message3",
    ]


async def test_get_keys(both: Both) -> None:
    for i in (1, 2, 3):
        await both("add_message", f"keys_user{i}", msg(f"user{i}_message"))

    assert await both("get_keys") == ["keys_user1", "keys_user2", "keys_user3"]


# -- more of the same, beyond LlamaIndex's tests --------------------------------------------


async def test_pages_of_every_status_agree(both: Both) -> None:
    await both("add_messages", "k", [msg(f"a{i}") for i in range(8)])
    await both("archive_oldest_messages", "k", 3)
    await both("add_message", "k", msg("direct"), ARCHIVED)
    await both("add_messages", "k", [msg("b1"), msg("b2")])

    for status in (ACTIVE, ARCHIVED, None):
        total = await both("count_messages", "k", status)
        for offset in (None, 0, 1, 2, total - 2, total - 1, total, total + 3):
            for limit in (None, 0, 1, 2, 3, total, total + 1):
                await both("get_messages", "k", status, limit, offset)
    assert texts(await both("get_messages", "k", None)) == [
        *[f"a{i}" for i in range(8)],
        "direct",
        "b1",
        "b2",
    ]


async def test_messages_added_as_archived_keep_their_place_among_the_moved_ones(
    both: Both,
) -> None:
    await both("add_messages", "k", [msg("1"), msg("2")])
    await both("add_message", "k", msg("x"), ARCHIVED)
    await both("add_message", "k", msg("3"))
    await both("set_messages", "k", [msg("y")], ARCHIVED)
    await both("add_message", "k", msg("4"))
    await both("add_message", "k", msg("z"), ARCHIVED)
    await both("archive_oldest_messages", "k", 5)

    assert texts(await both("get_messages", "k", ARCHIVED)) == ["y", "4", "z"]
    assert texts(await both("get_messages", "k", None)) == ["y", "4", "z"]


async def test_delete_and_archive_beyond_what_is_held(both: Both) -> None:
    await both("add_messages", "k", [msg("1"), msg("2")])

    assert await both("archive_oldest_messages", "k", 0) == []
    assert texts(await both("archive_oldest_messages", "k", 5)) == ["1", "2"]
    assert await both("archive_oldest_messages", "k", 1) == []
    assert await both("delete_oldest_messages", "k", 3) == []
    assert await both("archive_oldest_messages", "nonexistent", 1) == []
    assert await both("delete_oldest_messages", "nonexistent", 1) == []
    await both("delete_messages", "nonexistent")
    await both("delete_messages", "k", ACTIVE)
    assert await both("count_messages", "k", None) == 2
    await both("delete_messages", "k", ARCHIVED)
    assert await both("count_messages", "k", None) == 0
    assert await both("get_keys") == []


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_long_script_of_every_operation_agrees(both: Both, seed: int) -> None:
    rng = random.Random(seed)
    keys = ["k1", "k2", "k 3 ü"]
    counter = 0

    def fresh(n: int) -> list[ChatMessage]:
        nonlocal counter
        out = []
        for _ in range(n):
            counter += 1
            out.append(msg(f"m{counter}", rng.choice(["user", "assistant", "system"])))
        return out

    for _ in range(40):
        key = rng.choice(keys)
        status = rng.choice([ACTIVE, ARCHIVED])
        operation = rng.choice(
            ["add", "add", "adds", "adds", "set", "archive", "archive", "oldest", "delete", "one"]
        )
        if operation == "add":
            await both("add_message", key, fresh(1)[0], status)
        elif operation == "adds":
            await both("add_messages", key, fresh(rng.randint(1, 4)), status)
        elif operation == "set":
            await both("set_messages", key, fresh(rng.randint(0, 3)), status)
        elif operation == "archive":
            await both("archive_oldest_messages", key, rng.randint(0, 3))
        elif operation == "oldest":
            await both("delete_oldest_messages", key, rng.randint(0, 2))
        elif operation == "delete":
            await both("delete_messages", key, rng.choice([ACTIVE, ARCHIVED, None]))
        else:  # one message: the reference's row ids and convodb's seqs name the same ones
            ours = await both.seqs(key)
            if ours:
                i = rng.randrange(len(ours))
                table = both.reference._table
                assert table is not None and both.reference._async_session_factory is not None
                async with both.reference._async_session_factory() as session:
                    rows = await session.execute(
                        select(table.c.id)
                        .where(table.c.key == key, table.c.status == "active")
                        .order_by(table.c.timestamp, table.c.id)
                    )
                    theirs = [row[0] for row in rows]
                expected = await both.reference.delete_message(key, theirs[i])
                assert await both.store.delete_message(key, ours[i]) == expected
        for chosen in (ACTIVE, ARCHIVED, None):
            await both("get_messages", key, chosen)
            await both("count_messages", key, chosen)
        await both("get_messages", key, None, 2, 1)
        await both("get_keys")
    for key in keys:
        for chosen in (ACTIVE, ARCHIVED, None):
            await both("get_messages", key, chosen)


# -- messages: every shape makes the round trip ---------------------------------------------


def corpus() -> list[ChatMessage]:
    """The shapes LlamaIndex's LLM integrations and agents put into a memory."""
    return [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="developer", content="Answer in French."),
        ChatMessage(role="user", content="Hi"),
        ChatMessage(role="user", content=""),
        ChatMessage(role="user", content="Ünïcødé ✓ 🎉 \n\t line"),
        ChatMessage(role="user", blocks=[TextBlock(text="one"), TextBlock(text="two")]),
        ChatMessage(
            role="user",
            blocks=[TextBlock(text="What is this?"), ImageBlock(image=base64.b64decode(PNG))],
        ),
        ChatMessage(
            role="user",
            blocks=[ImageBlock(url="https://example.com/chart.png", detail="high")],
        ),
        ChatMessage(role="user", blocks=[ImageBlock(url="https://example.com/a", detail="x")]),
        ChatMessage(
            role="user",
            blocks=[DocumentBlock(data=base64.b64decode(PDF), document_mimetype="application/pdf")],
        ),
        ChatMessage(
            role="user",
            blocks=[DocumentBlock(data=b"plain notes", document_mimetype="text/plain", title="n")],
        ),
        ChatMessage(role="user", blocks=[DocumentBlock(url="https://example.com/doc.pdf")]),
        ChatMessage(role="user", blocks=[AudioBlock(audio=base64.b64decode(WAV), format="wav")]),
        ChatMessage(role="user", blocks=[VideoBlock(url="https://example.com/v.mp4")]),
        ChatMessage(
            role="user",
            blocks=[
                TextBlock(text="cached"),
                CachePoint(cache_control=CacheControl(type="ephemeral")),
            ],
        ),
        ChatMessage(role="system", blocks=[ImageBlock(url="https://example.com/s.png")]),
        ChatMessage(role="assistant", content="Hello!", additional_kwargs={"usage": {"n": 3}}),
        ChatMessage(
            role="assistant",
            blocks=[
                ThinkingBlock(content="Let me look.", additional_information={"signature": "s"}),
                TextBlock(text="Looking it up."),
                ToolCallBlock(tool_call_id="call_1", tool_name="weather", tool_kwargs={"c": "P"}),
                ToolCallBlock(tool_call_id="call_2", tool_name="time", tool_kwargs='{"tz": 1}'),
            ],
        ),
        ChatMessage(role="tool", content="18°C", additional_kwargs={"tool_call_id": "call_1"}),
        ChatMessage(
            role="tool",
            content="12:00",
            additional_kwargs={"tool_call_id": "call_2", "name": "time", "extra": [1, None]},
        ),
        ChatMessage(
            role="assistant",
            content=None,
            additional_kwargs={
                "tool_calls": [
                    {
                        "id": "call_3",
                        "type": "function",
                        "function": {"name": "search", "arguments": '{"q": "x"}'},
                    },
                    {"type": "custom", "input": "raw"},
                ]
            },
        ),
        ChatMessage(role="function", content="done", additional_kwargs={"name": "search"}),
        ChatMessage(role="tool", content="no call id"),
        ChatMessage(role="chatbot", content="Cohere says hi"),
        ChatMessage(role="model", content="Gemini says hi"),
        ChatMessage(
            role="assistant",
            blocks=[
                ToolCallBlock(tool_call_id="dup", tool_name="a"),
                ToolCallBlock(tool_call_id="dup", tool_name="b"),
                ToolCallBlock(tool_name="no id"),
            ],
        ),
        ChatMessage(role="assistant", blocks=[]),
        ChatMessage(role="user", blocks=[ToolCallBlock(tool_call_id="u", tool_name="in user")]),
    ]


async def test_every_message_shape_reads_back_equal(both: Both) -> None:
    messages = corpus()

    await both("add_messages", "shapes", messages)

    assert await both("get_messages", "shapes") == messages
    for i, message in enumerate(messages):  # one by one too: each alone makes the trip
        await both("add_message", f"one-{i}", message)
        assert await both("get_messages", f"one-{i}") == [message]


async def test_archived_and_deleted_messages_come_back_equal(both: Both) -> None:
    messages = corpus()
    await both("add_messages", "shapes", messages)

    archived = await both("archive_oldest_messages", "shapes", 10)
    deleted = await both("delete_oldest_messages", "shapes", 3)

    assert archived == messages[:10]
    assert deleted == messages[10:13]
    assert await both("get_messages", "shapes", ARCHIVED) == messages[:10]
    assert await both("get_messages", "shapes", None) == messages[:10] + messages[13:]
    await both("set_messages", "shapes", messages, ARCHIVED)
    assert await both("get_messages", "shapes", ARCHIVED) == messages


async def test_messages_are_convodb_messages_a_model_can_be_sent(
    store: ConvodbChatStore, service: ConversationService
) -> None:
    await store.add_messages("s", corpus())

    page = await service.list_messages(store.conversation_id("s"), ALICE, limit=100)
    stored = page.items
    assert [m.role for m in stored[:3]] == ["system", "system", "user"]
    assert stored[1].metadata["llama_index"]["role"] == "developer"
    assert stored[2].content == "Hi" and stored[2].metadata == {"llama_index": {}}
    image = stored[6].content
    assert isinstance(image, tuple) and image[0] == TextPart(text="What is this?")
    assert isinstance(image[1], ImagePart) and image[1].media_type == "image/png"
    assert image[1].width == 2 and image[1].data is None  # stored apart, as convodb does
    calls = stored[17]
    assert calls.text == "Looking it up."
    assert [(c.id, c.name, c.arguments) for c in calls.tool_calls or ()] == [
        ("call_1", "weather", '{"c": "P"}'),
        ("call_2", "time", '{"tz": 1}'),
    ]
    assert (stored[18].role, stored[18].tool_call_id, stored[18].tool_name) == (
        "tool",
        "call_1",
        None,
    )
    assert (stored[19].tool_call_id, stored[19].tool_name) == ("call_2", "time")
    assert [c.id for c in stored[20].tool_calls or ()] == ["call_3"]
    # A tool result without the call it answers is no convodb tool message.
    assert [m.role for m in stored[21:25]] == ["user", "user", "assistant", "assistant"]
    # Every API format takes the history (orphan results and unanswered calls left out).
    for name in ("openai-chat", "anthropic", "openai-responses"):
        assert format_messages(name, stored)


async def test_messages_written_through_convodb_are_read_as_chat_messages(
    store: ConvodbChatStore, service: ConversationService
) -> None:
    await store.add_message("s", msg("from LlamaIndex"))
    await service.save_conversation_messages(
        store.conversation_id("s"),
        ALICE,
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    ImagePart(data=PNG, media_type="image/png"),
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "name": "f", "arguments": '{"a": 1}'}],
            },
            {"role": "tool", "content": "r", "tool_call_id": "c1", "tool_name": "f"},
        ],
    )

    messages = await store.get_messages("s")

    assert messages[0] == msg("from LlamaIndex")
    assert messages[1].blocks == [
        TextBlock(text="look"),
        ImageBlock(image=PNG.encode(), image_mimetype="image/png"),
    ]
    assert messages[2] == ChatMessage(
        role="assistant",
        blocks=[ToolCallBlock(tool_call_id="c1", tool_name="f", tool_kwargs={"a": 1})],
    )
    assert messages[3] == ChatMessage(
        role="tool", content="r", additional_kwargs={"tool_call_id": "c1", "name": "f"}
    )
    # Archiving moves them like any other, and they read back the same.
    assert await store.archive_oldest_messages("s", 4) == messages
    assert await store.get_messages("s", ARCHIVED) == messages


# -- keys belong to a user ------------------------------------------------------------------


async def test_two_users_with_the_same_key_never_see_each_other(db: Database) -> None:
    alice = ConvodbChatStore(database=db, user_id=ALICE)
    bob = ConvodbChatStore(database=db, user_id=BOB)
    await alice.add_messages("default", [msg("a1"), msg("a2")])
    await bob.add_message("default", msg("b1"))
    await alice.add_message("only-alice", msg("a3"), ARCHIVED)

    assert texts(await alice.get_messages("default")) == ["a1", "a2"]
    assert texts(await bob.get_messages("default")) == ["b1"]
    assert sorted(await alice.get_keys()) == ["default", "only-alice"]
    assert await bob.get_keys() == ["default"]
    assert await bob.get_messages("only-alice", None) == []
    assert alice.conversation_id("default") != bob.conversation_id("default")

    assert await bob.delete_message("default", 1) == msg("b1")  # bob's seq 1, not alice's
    assert texts(await bob.archive_oldest_messages("default", 5)) == []
    await bob.set_messages("default", [msg("b2")])
    await bob.delete_messages("only-alice")
    assert texts(await alice.get_messages("default")) == ["a1", "a2"]
    assert await alice.count_messages("only-alice", ARCHIVED) == 1


async def test_get_keys_leaves_out_keys_emptied_and_conversations_of_other_kinds(
    store: ConvodbChatStore, service: ConversationService
) -> None:
    await store.add_message("kept", msg("x"))
    await store.add_message("emptied", msg("y"))
    await store.delete_messages("emptied")
    await service.get_or_create_conversation(
        None, ALICE, metadata={"llama_index": {"key": "forged", "status": "active"}}
    )

    assert await store.get_keys() == ["kept"]


# -- atomicity and concurrency ---------------------------------------------------------------


async def test_a_bad_message_stores_nothing(store: ConvodbChatStore) -> None:
    await store.add_messages("k", [msg("kept")])

    with pytest.raises(ValidationError) as error:
        await store.add_messages("k", [msg("fine"), msg("nul \x00 here")])
    assert error.value.field == "messages[1].content"
    with pytest.raises(ValidationError):
        await store.set_messages("k", [msg("new"), msg("nul \x00")])

    assert texts(await store.get_messages("k", None)) == ["kept"]


async def test_concurrent_archiving_moves_each_message_once(store: ConvodbChatStore) -> None:
    await store.add_messages("k", [msg(f"m{i}") for i in range(10)])

    results = await asyncio.gather(*(store.archive_oldest_messages("k", 2) for _ in range(4)))

    moved = [str(m.content) for batch in results for m in batch]
    assert sorted(moved) == sorted(f"m{i}" for i in range(8))
    assert texts(await store.get_messages("k", ARCHIVED)) == [f"m{i}" for i in range(8)]
    assert texts(await store.get_messages("k")) == ["m8", "m9"]


async def test_more_messages_than_one_append_or_removal_takes(store: ConvodbChatStore) -> None:
    messages = [msg(f"m{i}") for i in range(1005)]

    await store.add_messages("k", messages)
    archived = await store.archive_oldest_messages("k", 1002)

    assert archived == messages[:1002]
    assert await store.count_messages("k", ARCHIVED) == 1002
    assert await store.get_messages("k") == messages[1002:]
    assert await store.get_messages("k", None, limit=3, offset=1001) == messages[1001:1004]
    await store.set_messages("k", messages[:1001], ARCHIVED)
    assert await store.get_messages("k", ARCHIVED, offset=999) == messages[999:1001]


# -- ids ------------------------------------------------------------------------------------


async def test_delete_message_takes_an_active_seq_or_minus_an_archived_one(
    store: ConvodbChatStore,
) -> None:
    await store.add_messages("k", [msg("1"), msg("2"), msg("3")])
    await store.archive_oldest_messages("k", 1)
    await store.add_message("k", msg("4"))

    assert await store.delete_message("k", 1) is None  # archived: its active seq is gone
    assert await store.delete_message("k", 4) == msg("4")
    assert await store.delete_message("k", -1) == msg("1")  # the archived conversation's seq 1
    assert await store.delete_message("k", 0) is None
    assert await store.delete_message("k", -7) is None
    assert texts(await store.get_messages("k", None)) == ["2", "3"]


# -- bad input ------------------------------------------------------------------------------


async def test_bad_arguments_are_validation_errors_naming_the_field(
    store: ConvodbChatStore, db: Database
) -> None:
    cases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("key", lambda: store.get_messages(7)),  # type: ignore[arg-type]
        ("status", lambda: store.get_messages("k", "deleted")),  # type: ignore[arg-type]
        ("limit", lambda: store.get_messages("k", limit=-1)),
        ("offset", lambda: store.get_messages("k", offset=-1)),
        ("limit", lambda: store.get_messages("k", limit=1.5)),  # type: ignore[arg-type]
        ("n", lambda: store.archive_oldest_messages("k", -1)),
        ("n", lambda: store.delete_oldest_messages("k", True)),
        ("idx", lambda: store.delete_message("k", "1")),  # type: ignore[arg-type]
        ("messages", lambda: store.add_messages("k", msg("x"))),  # type: ignore[arg-type]
        ("messages[0]", lambda: store.add_messages("k", [{"role": "user"}])),  # type: ignore[list-item]
        ("status", lambda: store.add_message("k", msg("x"), None)),  # type: ignore[arg-type]
    ]
    for field, call in cases:
        with pytest.raises(ValidationError) as error:
            await call()
        assert error.value.field == field
    with pytest.raises(ValidationError) as error:
        ConvodbChatStore(database=db, user_id="")
    assert error.value.field == "user_id"
    with pytest.raises(ValidationError) as error:
        ConvodbChatStore(database="sqlite://", user_id=ALICE)  # type: ignore[arg-type]
    assert error.value.field == "database"
    assert await store.get_keys() == []


async def test_a_block_too_large_for_metadata_is_a_limit_error(store: ConvodbChatStore) -> None:
    # A video block has no convodb part: it is kept in the metadata, whose size is limited.
    video = ChatMessage(role="user", blocks=[VideoBlock(video=b"\x00" * 70_000)])

    with pytest.raises(LimitExceededError) as error:
        await store.add_message("k", video)

    assert error.value.field == "messages[0].metadata"
    assert await store.count_messages("k") == 0


async def test_status_may_be_given_as_its_value(store: ConvodbChatStore) -> None:
    await store.add_message("k", msg("x"), "archived")  # type: ignore[arg-type]

    assert texts(await store.get_messages("k", "archived")) == ["x"]  # type: ignore[arg-type]
    assert store.conversation_id("k", "archived") == store.conversation_id("k", ARCHIVED)  # type: ignore[arg-type]


# -- review fixes ---------------------------------------------------------------------------


async def test_a_bad_message_past_one_append_is_named_by_its_index_in_the_batch(
    store: ConvodbChatStore,
) -> None:
    fine = [msg(f"m{i}") for i in range(1500)]
    await store.add_message("k", msg("kept"))
    video = ChatMessage(role="user", blocks=[VideoBlock(video=b"\x00" * 70_000)])

    for call in (store.add_messages, store.set_messages):
        for status in (ACTIVE, ARCHIVED):
            with pytest.raises(ValidationError) as error:
                await call("k", [*fine, msg("nul \x00")], status)
            assert type(error.value) is ValidationError
            assert error.value.field == "messages[1500].content"
            with pytest.raises(LimitExceededError) as limit:
                await call("k", [*fine, msg("x"), video], status)
            assert limit.value.field == "messages[1501].metadata"
            assert limit.value.limit == 64 * 1024

    assert texts(await store.get_messages("k", None)) == ["kept"]


def pause_after_first_read(
    monkeypatch: pytest.MonkeyPatch, write: Callable[[], Awaitable[object]]
) -> list[asyncio.Future[object]]:
    """Starts ``write`` right after the first page any reader reads, and lets it run (half
    a second) before that reader reads on: unless the write waits for the reader's lock, it
    lands between the reader's reads."""
    started: list[asyncio.Future[object]] = []
    original = ConversationService.list_messages

    async def paused(self: ConversationService, *args: Any, **kwargs: Any) -> Any:
        page = await original(self, *args, **kwargs)
        if not started:
            started.append(asyncio.ensure_future(write()))
            await asyncio.sleep(0.5)
        return page

    monkeypatch.setattr(ConversationService, "list_messages", paused)
    return started


@pytest.mark.parametrize("write", ["set_messages", "delete_messages", "archive"])
async def test_reading_both_statuses_sees_one_state_of_the_key(
    store: ConvodbChatStore, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    await store.add_messages("k", [msg("old1"), msg("old2"), msg("old3")])
    await store.archive_oldest_messages("k", 1)
    writes: dict[str, Callable[[], Awaitable[object]]] = {
        "set_messages": lambda: store.set_messages("k", [msg("new1")]),
        "delete_messages": lambda: store.delete_messages("k"),
        "archive": lambda: store.archive_oldest_messages("k", 2),
    }
    after = {"set_messages": ["new1"], "delete_messages": [], "archive": ["old1", "old2", "old3"]}
    started = pause_after_first_read(monkeypatch, writes[write])

    read = texts(await store.get_messages("k", None))
    await started[0]

    assert read in (["old1", "old2", "old3"], after[write])
    assert texts(await store.get_messages("k", None)) == after[write]


async def test_a_page_of_archived_messages_reads_that_page_not_the_history(
    store: ConvodbChatStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [msg(f"m{i}") for i in range(1200)]
    await store.add_messages("k", messages)
    await store.archive_oldest_messages("k", 1100)
    read: list[int] = []
    original = ConversationService.list_messages

    async def counted(self: ConversationService, *args: Any, **kwargs: Any) -> Any:
        page = await original(self, *args, **kwargs)
        read.append(len(page.items))
        return page

    monkeypatch.setattr(ConversationService, "list_messages", counted)

    pages: list[tuple[MessageStatus | None, int, int]] = [
        (ARCHIVED, 0, 10),
        (ARCHIVED, 1095, 10),
        (None, 0, 10),
        (None, 1095, 10),
        (None, 1190, 10),
    ]
    for status, offset, limit in pages:
        read.clear()
        got = await store.get_messages("k", status, limit=limit, offset=offset)
        held = messages[:1100] if status is ARCHIVED else messages
        assert got == held[offset : offset + limit]
        assert sum(read) <= limit, (status, offset, read)

    # Messages added as archived belong among the moved ones by their place: read whole.
    await store.add_message("k", msg("added"), ARCHIVED)
    assert texts(await store.get_messages("k", ARCHIVED, offset=1099)) == ["m1099", "added"]
    assert texts(await store.get_messages("k", None, offset=1199)) == ["m1199", "added"]
    await store.delete_messages("k", ARCHIVED)  # none left: pages are read as pages again
    await store.archive_oldest_messages("k", 50)
    read.clear()
    assert await store.get_messages("k", None, limit=5, offset=48) == messages[1148:1153]
    assert sum(read) <= 5


async def test_kwargs_pydantic_cannot_serialize_are_a_validation_error_naming_the_message(
    store: ConvodbChatStore,
) -> None:
    odd = ChatMessage(role="user", content="x", additional_kwargs={"handle": object()})
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("messages[0]", lambda: store.add_message("k", odd)),
        ("messages[1]", lambda: store.add_messages("k", [msg("x"), odd])),
        ("messages[1]", lambda: store.set_messages("k", [msg("x"), odd], ARCHIVED)),
    ]
    for field, call in calls:
        with pytest.raises(ValidationError) as error:
            await call()
        assert error.value.field == field
    assert await store.get_keys() == []


async def test_a_key_convodb_cannot_store_is_a_validation_error_naming_the_key(
    store: ConvodbChatStore,
) -> None:
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = []
    for key in ("nul \x00", "lone \ud800", "k" * 70_000):
        calls += [
            ("key", lambda key=key: store.add_message(key, msg("x"))),  # type: ignore[misc]
            ("key", lambda key=key: store.get_messages(key)),  # type: ignore[misc]
            ("key", lambda key=key: store.get_messages(key, None)),  # type: ignore[misc]
            ("key", lambda key=key: store.count_messages(key)),  # type: ignore[misc]
            ("key", lambda key=key: store.delete_messages(key)),  # type: ignore[misc]
        ]
    for field, call in calls:
        with pytest.raises(ValidationError) as error:
            await call()
        assert error.value.field == field
    with pytest.raises(LimitExceededError) as limit:
        await store.get_messages("k" * 70_000)
    assert limit.value.limit == 64 * 1024
    assert await store.get_keys() == []


async def test_malformed_metadata_under_the_adapters_key_reads_as_a_plain_message(
    store: ConvodbChatStore, service: ConversationService
) -> None:
    malformed: list[object] = [
        {"blocks": [{"part": 5}]},
        {"blocks": [{"call": 0}]},
        {"blocks": [{"other": 1}]},
        {"blocks": "text"},
        {"blocks": [7]},
        {"blocks": [{"part": 0, "rest": [1]}]},
        {"kwargs": 3},
        {"fields": 3},
        {"role": "nobody"},
        {"message": 5},
        {"kwargs_calls": [{"call": 2}]},
    ]
    await store.add_message("k", msg("first"))
    await service.save_conversation_messages(
        store.conversation_id("k"),
        ALICE,
        [
            {"role": "user", "content": f"t{i}", "metadata": {"llama_index": meta}}
            for i, meta in enumerate(malformed)
        ],
    )
    expected = [msg("first"), *(msg(f"t{i}") for i in range(len(malformed)))]

    assert await store.get_messages("k") == expected
    assert await store.archive_oldest_messages("k", 20) == expected
    assert await store.get_messages("k", ARCHIVED) == expected
    assert await store.delete_message("k", -2) == expected[1]
