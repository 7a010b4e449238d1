"""The store's contract, on every database: order, atomicity, ownership, tool calls."""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
from collections.abc import Awaitable, Callable
from dataclasses import FrozenInstanceError, fields, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text, update

from convodb import (
    ConversationExistsError,
    ConversationNotFoundError,
    ConversationService,
    Database,
    IdempotencyKeyReuseError,
    LimitExceededError,
    NewMessage,
    StoredMessage,
    ToolCall,
    ValidationError,
    build_message_array,
)
from convodb._models import messages as messages_table
from convodb._service import Order
from convodb._validation import MAX_SEQ
from convodb.errors import MessageNotFoundError

from ._store import state

ALICE, BOB = "alice", "bob"


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


async def new_conversation(service: ConversationService, owner: str = ALICE) -> str:
    return (await service.create_conversation(owner)).id


# -- rule 1: history is the latest N, oldest first, ordered by seq -----------------------


async def test_history_returns_latest_n_oldest_first(service: ConversationService) -> None:
    cid = await new_conversation(service)
    await service.save_conversation_messages(cid, ALICE, [user(f"m{i}") for i in range(1, 121)])

    history = await service.get_conversation_history(cid, ALICE, limit=50)

    assert [m.content for m in history] == [f"m{i}" for i in range(71, 121)]
    assert [m.seq for m in history] == list(range(71, 121))


async def test_history_orders_by_seq_not_by_timestamp(
    db: Database, service: ConversationService
) -> None:
    cid = await new_conversation(service)
    await service.save_conversation_messages(cid, ALICE, [user(f"m{i}") for i in range(1, 6)])
    # Clock skew between app servers: later messages stamped earlier.
    base = datetime(2030, 1, 1, tzinfo=UTC)
    async with db.engine.begin() as conn:
        for seq in range(1, 6):
            await conn.execute(
                update(messages_table)
                .where(messages_table.c.conversation_id == cid, messages_table.c.seq == seq)
                .values(created_at=base - timedelta(minutes=seq))
            )

    history = await service.get_conversation_history(cid, ALICE, limit=3)

    assert [m.content for m in history] == ["m3", "m4", "m5"]


async def test_history_of_empty_conversation_is_empty(service: ConversationService) -> None:
    cid = await new_conversation(service)
    assert await service.get_conversation_history(cid, ALICE) == []


async def test_timestamps_are_timezone_aware_utc(service: ConversationService) -> None:
    conversation = await service.create_conversation(ALICE)
    await service.save_message(conversation.id, "user", "hi", user_id=ALICE)
    (message,) = await service.get_conversation_history(conversation.id, ALICE)
    again = await service.get_conversation(conversation.id, ALICE)
    for stamp in (message.created_at, again.created_at, again.updated_at):
        assert stamp.utcoffset() == timedelta(0)


# -- rule 3: a batch is atomic, updated_at moves ------------------------------------------


async def test_invalid_message_in_batch_stores_nothing(
    db: Database, service: ConversationService
) -> None:
    cid = await new_conversation(service)
    await service.save_message(cid, "user", "first", user_id=ALICE)
    before = await state(db, cid)

    with pytest.raises(ValidationError) as raised:
        await service.save_conversation_messages(
            cid, ALICE, [user("ok"), user("ok too"), {"role": "wizard", "content": "x"}]
        )

    assert raised.value.field == "messages[2].role"
    assert await state(db, cid) == before


async def _install_failing_insert(db: Database) -> None:
    """A real database trigger that rejects a message whose content is 'boom'."""
    async with db.engine.begin() as conn:
        if db.dialect_name == "sqlite":
            await conn.execute(
                text(
                    "CREATE TRIGGER boom BEFORE INSERT ON messages WHEN NEW.content = 'boom' "
                    "BEGIN SELECT RAISE(ABORT, 'boom'); END"
                )
            )
        elif db.dialect_name == "mysql":
            await conn.execute(text("DROP TRIGGER IF EXISTS boom"))
            await conn.execute(
                text(
                    "CREATE TRIGGER boom BEFORE INSERT ON messages FOR EACH ROW BEGIN "
                    "IF NEW.content = 'boom' THEN SIGNAL SQLSTATE '45000' "
                    "SET MESSAGE_TEXT = 'boom'; END IF; END"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE OR REPLACE FUNCTION boom() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.content = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            await conn.execute(text("DROP TRIGGER IF EXISTS boom ON messages"))
            await conn.execute(
                text(
                    "CREATE TRIGGER boom BEFORE INSERT ON messages "
                    "FOR EACH ROW EXECUTE FUNCTION boom()"
                )
            )


async def _remove_failing_insert(db: Database) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "DROP TRIGGER IF EXISTS boom"
                + (" ON messages" if db.dialect_name == "postgresql" else "")
            )
        )


async def test_write_failing_midway_stores_nothing_and_keeps_seq(db: Database) -> None:
    async with db.session() as session:
        service = ConversationService(session)
        cid = await new_conversation(service)
        await service.save_message(cid, "user", "first", user_id=ALICE)
    before = await state(db, cid)
    await _install_failing_insert(db)
    try:
        async with db.session() as session:
            service = ConversationService(session)
            with pytest.raises(Exception, match="boom"):
                await service.save_conversation_messages(
                    cid, ALICE, [user("a"), user("b"), user("boom"), user("c")]
                )
        assert await state(db, cid) == before

        async with db.session() as session:
            stored = await ConversationService(session).save_message(
                cid, "user", "after", user_id=ALICE
            )
        assert stored.seq == 2  # the failed batch did not advance seq
    finally:
        await _remove_failing_insert(db)


async def test_updated_at_moves_on_every_append(db: Database, service: ConversationService) -> None:
    conversation = await service.create_conversation(ALICE)
    seen = [conversation.updated_at]
    for i in range(3):
        await asyncio.sleep(0.002)
        await service.save_message(conversation.id, "user", f"m{i}", user_id=ALICE)
        current = (await state(db, conversation.id)).updated_at
        assert current is not None
        seen.append(current)
    assert seen == sorted(seen) and len(set(seen)) == 4


async def test_append_returns_stored_messages_with_seq_and_id(
    service: ConversationService,
) -> None:
    cid = await new_conversation(service)
    stored = await service.save_conversation_messages(
        cid, ALICE, [user("a"), NewMessage(role="assistant", content="b", metadata={"m": 1})]
    )
    assert [(m.seq, m.role, m.content) for m in stored] == [(1, "user", "a"), (2, "assistant", "b")]
    assert len({m.id for m in stored}) == 2
    assert stored == await service.get_conversation_history(cid, ALICE)
    # A batch of plain messages (no metadata, keys or tools) has a leaner statement on
    # PostgreSQL: every column must read back the same.
    plain = await service.save_conversation_messages(cid, ALICE, [user("c"), user("d")])
    assert [m.metadata for m in plain] == [{}, {}]
    assert stored + plain == await service.get_conversation_history(cid, ALICE)
    assert (await service.get_conversation(cid, ALICE)).last_seq == 4


# -- rule 4: another user's conversation looks missing -------------------------------------


# A 1x1 PNG, and its digest: an attachment the owner stores.
IMAGE = {
    "type": "image",
    "media_type": "image/png",
    "data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUV"
    "ORK5CYII=",
}
IMAGE_DIGEST = "63ef318d96b5d0d0ceba6e04a4e622b1158335cdc67c49e27839132c6f655058"


async def _call_every_method(service: ConversationService, cid: str, who: str) -> list[object]:
    """Call each conversation-scoped method as ``who``; collect results or errors.

    (``get_or_create_conversation`` creates a missing conversation, so it has its own test.)
    """
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: service.get_conversation(cid, who),
        lambda: service.update_conversation(cid, who, title="mine now"),
        lambda: service.update_conversation(cid, who, metadata={"x": 1}),
        lambda: service.save_message(cid, "user", "hi", user_id=who),
        lambda: service.save_message(cid, "user", "hi", user_id=who, key="k"),
        lambda: service.save_conversation_messages(cid, who, [user("a"), user("b")]),
        lambda: service.save_conversation_messages(cid, who, []),
        lambda: service.save_message(cid, "user", [IMAGE], user_id=who),
        lambda: service.get_attachment(cid, who, IMAGE_DIGEST),
        lambda: service.get_conversation_history(cid, who),
        lambda: service.list_messages(cid, who),
        lambda: service.list_messages(cid, who, order="desc"),
        lambda: service.list_messages(cid, who, after_seq=0),
        lambda: service.get_message(cid, who, 1),
        lambda: service.get_message(cid, who, 99),
        lambda: service.list_summaries(cid, who),
        lambda: service.list_summaries(cid, who, cursor=forged("summaries", s=2)),
        lambda: service.delete_conversation(cid, who),
    ]
    outcomes: list[object] = []
    for call in calls:
        try:
            outcomes.append(await call())
        except Exception as exc:
            outcomes.append((type(exc), str(exc)))
    return outcomes


async def test_foreign_conversation_is_indistinguishable_from_missing(
    db: Database, service: ConversationService
) -> None:
    conversation = await service.create_conversation(ALICE, conversation_id="shared-id-1")
    await service.save_message(conversation.id, "user", "secret", user_id=ALICE, key="k")
    await service.save_message(conversation.id, "user", [IMAGE], user_id=ALICE)
    await service.save_summary(conversation.id, ALICE, "A asked something", upto_seq=1)
    before = await state(db, conversation.id)

    foreign = await _call_every_method(service, "shared-id-1", BOB)
    await service.delete_conversation("shared-id-1", ALICE)
    missing = await _call_every_method(service, "shared-id-1", BOB)

    assert foreign == missing
    assert foreign == [(ConversationNotFoundError, "Conversation not found: 'shared-id-1'")] * 18
    assert (before.messages, before.last_seq, before.attachments) == (2, 2, 1)


async def test_foreign_conversation_is_left_unchanged(
    db: Database, service: ConversationService
) -> None:
    conversation = await service.create_conversation(ALICE, title="A's", metadata={"a": 1})
    await service.save_message(conversation.id, "user", "secret", user_id=ALICE)
    await service.save_message(conversation.id, "user", [IMAGE], user_id=ALICE)
    before = await state(db, conversation.id)

    await _call_every_method(service, conversation.id, BOB)

    assert await state(db, conversation.id) == before
    after = await service.get_conversation(conversation.id, ALICE)
    assert (after.title, after.metadata, after.user_id) == ("A's", {"a": 1}, ALICE)
    history = await service.get_conversation_history(conversation.id, ALICE)
    assert [m.text for m in history] == ["secret", ""]
    assert (await service.get_attachment(conversation.id, ALICE, IMAGE_DIGEST)).size == 68


async def test_get_or_create_with_foreign_id_raises_not_found_and_writes_nothing(
    db: Database, service: ConversationService
) -> None:
    await service.create_conversation(ALICE, conversation_id="taken-by-alice")
    before = await state(db, "taken-by-alice")

    with pytest.raises(ConversationNotFoundError) as raised:
        await service.get_or_create_conversation("taken-by-alice", BOB)

    assert isinstance(raised.value, LookupError) and isinstance(raised.value, PermissionError)
    assert await state(db, "taken-by-alice") == before
    assert (await service.get_conversation("taken-by-alice", ALICE)).user_id == ALICE


async def test_get_or_create_returns_existing_and_creates_missing(
    service: ConversationService,
) -> None:
    created = await service.get_or_create_conversation("chat-42", ALICE)
    await service.save_message("chat-42", "user", "hi", user_id=ALICE)
    again = await service.get_or_create_conversation("chat-42", ALICE)
    fresh = await service.get_or_create_conversation(None, ALICE)

    assert created.id == again.id == "chat-42" and again.last_seq == 1
    assert fresh.id != created.id and fresh.user_id == ALICE


async def test_concurrent_get_or_create_of_one_id_creates_it_once(db: Database) -> None:
    async def get_or_create() -> str:
        async with db.session() as session:
            return (await ConversationService(session).get_or_create_conversation("race", ALICE)).id

    ids = await asyncio.gather(*(get_or_create() for _ in range(8)))

    assert ids == ["race"] * 8
    assert (await state(db, "race")).conversations == 1


# -- rule 5: tool calls round-trip exactly ----------------------------------------------


async def test_tool_calls_and_results_round_trip_exactly(service: ConversationService) -> None:
    cid = await new_conversation(service)
    arguments = '{"city": "Zürich",  "unit":"°C", "note": "naïve 🌧️ \\n \\u00e9"}'
    turn: list[NewMessage | dict[str, str]] = [
        user("Weather in Zürich and Kraków?"),
        NewMessage(
            role="assistant",
            content=None,
            tool_calls=[
                ToolCall(id="call_ä1", name="get_weather", arguments=arguments),
                {"id": "call_2", "name": "get_weather", "arguments": '{"city":"Kraków"}'},
            ],
        ),
        NewMessage(
            role="tool", content="12 °C, 🌧️", tool_call_id="call_ä1", tool_name="get_weather"
        ),
        NewMessage(role="tool", content="3 °C", tool_call_id="call_2", tool_name="get_weather"),
        NewMessage(role="assistant", content="Zürich 12 °C, Kraków 3 °C."),
    ]
    await service.save_conversation_messages(cid, ALICE, turn)

    history = await service.get_conversation_history(cid, ALICE)

    assistant = history[1]
    assert assistant.content is None
    assert assistant.tool_calls == (
        ToolCall("call_ä1", "get_weather", arguments),
        ToolCall("call_2", "get_weather", '{"city":"Kraków"}'),
    )
    assert [(m.role, m.tool_call_id, m.tool_name, m.content) for m in history[2:4]] == [
        ("tool", "call_ä1", "get_weather", "12 °C, 🌧️"),
        ("tool", "call_2", "get_weather", "3 °C"),
    ]
    array = build_message_array(history, "thanks", system_prompt="Be brief.")
    assert array[2]["tool_calls"][0] == {
        "id": "call_ä1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }
    assert array[3] == {"role": "tool", "content": "12 °C, 🌧️", "tool_call_id": "call_ä1"}


async def test_records_read_back_are_ordinary_frozen_records(
    service: ConversationService,
) -> None:
    # Reads build records by a faster route than the constructor: what comes back must be
    # indistinguishable from records made the ordinary way.
    cid = await new_conversation(service)
    call = ToolCall(id="c1", name="f", arguments="{}")
    stored = await service.save_conversation_messages(
        cid,
        ALICE,
        [
            user("a"),
            NewMessage(role="assistant", content=None, tool_calls=[call], metadata={"m": 1}),
        ],
    )
    for read in (
        await service.get_conversation_history(cid, ALICE),
        (await service.list_messages(cid, ALICE)).items,
        [await service.get_message(cid, ALICE, 2)],
    ):
        message = read[-1]
        assert type(message) is StoredMessage and message == stored[1]
        assert message.tool_calls is not None and type(message.tool_calls[0]) is ToolCall
        assert message == StoredMessage(*(getattr(message, f.name) for f in fields(message)))
        assert hash(message.tool_calls[0]) == hash(call)
        with pytest.raises(FrozenInstanceError):
            message.seq = 3  # type: ignore[misc]
        assert replace(message, content="x").content == "x"
        assert pickle.loads(pickle.dumps(message)) == message


# -- idempotency ---------------------------------------------------------------------------


async def test_retried_append_with_keys_stores_nothing_twice(
    db: Database, service: ConversationService
) -> None:
    cid = await new_conversation(service)
    batch = [
        {"role": "user", "content": "hi", "key": "turn-1-user"},
        {"role": "assistant", "content": "hello", "key": "turn-1-assistant"},
    ]
    first = await service.save_conversation_messages(cid, ALICE, batch)
    after_first = await state(db, cid)

    retry = await service.save_conversation_messages(cid, ALICE, batch)

    assert retry == first
    assert await state(db, cid) == after_first


async def test_partly_retried_batch_appends_only_the_new_messages(
    service: ConversationService,
) -> None:
    cid = await new_conversation(service)
    (first,) = await service.save_conversation_messages(cid, ALICE, [{**user("a"), "key": "a"}])
    result = await service.save_conversation_messages(
        cid, ALICE, [{**user("a"), "key": "a"}, {**user("b"), "key": "b"}, user("c")]
    )
    assert result[0] == first
    assert [(m.seq, m.content) for m in result[1:]] == [(2, "b"), (3, "c")]


async def test_batch_idempotency_key_replays_the_batch_and_rejects_any_other(
    db: Database, service: ConversationService
) -> None:
    cid = await new_conversation(service)
    batch = [user("a"), user("b"), user("c")]
    first = await service.save_conversation_messages(cid, ALICE, batch, idempotency_key="t-1")
    after_first = await state(db, cid)

    retry = await service.save_conversation_messages(cid, ALICE, batch, idempotency_key="t-1")

    assert retry == first
    different = [user("a"), user("b"), user("X")]
    for other in (different, [*batch, user("d")], batch[:2], batch[:1]):
        with pytest.raises(IdempotencyKeyReuseError, match="'t-1' was used for a different batch"):
            await service.save_conversation_messages(cid, ALICE, other, idempotency_key="t-1")
    assert await state(db, cid) == after_first
    fresh = await service.save_conversation_messages(cid, ALICE, batch, idempotency_key="t-2")
    assert [m.seq for m in fresh] == [4, 5, 6]


async def test_batch_idempotency_key_and_message_keys_do_not_mix(
    db: Database, service: ConversationService
) -> None:
    cid = await new_conversation(service)
    with pytest.raises(ValidationError) as raised:
        await service.save_conversation_messages(
            cid, ALICE, [user("a"), {**user("b"), "key": "own"}], idempotency_key="t-1"
        )
    assert raised.value.field == "messages[1].key"
    for bad in ("", "k" * 240, "a\x00"):
        with pytest.raises(ValidationError) as raised:
            await service.save_conversation_messages(cid, ALICE, [user("a")], idempotency_key=bad)
        assert raised.value.field == "idempotency_key"
    assert (await state(db, cid)).messages == 0


async def test_batch_idempotency_keys_never_collide_with_message_keys(
    service: ConversationService,
) -> None:
    cid = await new_conversation(service)
    await service.save_message(cid, "user", "a", user_id=ALICE, key="turn-1:0")
    stored = await service.save_conversation_messages(
        cid, ALICE, [user("a"), user("b")], idempotency_key="turn-1"
    )
    assert [m.seq for m in stored] == [2, 3]


async def test_retry_with_tuples_in_metadata_is_the_same_message(
    db: Database, service: ConversationService
) -> None:
    cid = await new_conversation(service)
    first = await service.save_message(
        cid, "user", "x", user_id=ALICE, key="m", metadata={"tags": ("a", "b")}
    )
    retry = await service.save_message(
        cid, "user", "x", user_id=ALICE, key="m", metadata={"tags": ("a", "b")}
    )
    assert retry == first and first.metadata == {"tags": ["a", "b"]}
    assert (await state(db, cid)).messages == 1


async def test_key_reused_for_a_different_message_is_a_conflict(
    db: Database, service: ConversationService
) -> None:
    cid = await new_conversation(service)
    await service.save_message(cid, "user", "original", user_id=ALICE, key="k1")
    before = await state(db, cid)

    with pytest.raises(IdempotencyKeyReuseError, match="k1"):
        await service.save_conversation_messages(
            cid, ALICE, [user("new"), {**user("changed"), "key": "k1"}]
        )

    assert await state(db, cid) == before


async def test_concurrent_retries_of_one_keyed_message_store_it_once(db: Database) -> None:
    async with db.session() as session:
        cid = await new_conversation(ConversationService(session))

    async def send() -> StoredMessage:
        async with db.session() as session:
            return await ConversationService(session).save_message(
                cid, "user", "once", user_id=ALICE, key="retry-me"
            )

    results = await asyncio.gather(*(send() for _ in range(6)))

    assert {m.id for m in results} == {results[0].id}
    assert (await state(db, cid)).messages == 1


async def test_same_key_in_two_conversations_is_two_messages(service: ConversationService) -> None:
    a, b = await new_conversation(service), await new_conversation(service)
    first = await service.save_message(a, "user", "x", user_id=ALICE, key="k")
    second = await service.save_message(b, "user", "x", user_id=ALICE, key="k")
    assert first.id != second.id


# -- conversations: create, update, delete, list ------------------------------------------


async def test_create_with_taken_id_is_a_conflict(service: ConversationService) -> None:
    await service.create_conversation(ALICE, conversation_id="c-1")
    with pytest.raises(ConversationExistsError):
        await service.create_conversation(ALICE, conversation_id="c-1")


async def test_update_title_and_metadata(service: ConversationService) -> None:
    created = await service.create_conversation(ALICE, title="Old", metadata={"a": 1})

    renamed = await service.update_conversation(created.id, ALICE, title="New")
    replaced = await service.update_conversation(created.id, ALICE, metadata={"b": [1, "x"]})
    cleared = await service.update_conversation(created.id, ALICE, title=None)

    assert (renamed.title, renamed.metadata) == ("New", {"a": 1})
    assert (replaced.title, replaced.metadata) == ("New", {"b": [1, "x"]})
    assert cleared.title is None
    assert created.updated_at < renamed.updated_at <= replaced.updated_at <= cleared.updated_at
    assert await service.get_conversation(created.id, ALICE) == cleared


async def test_delete_removes_conversation_and_its_messages(
    db: Database, service: ConversationService
) -> None:
    cid = await new_conversation(service)
    await service.save_conversation_messages(cid, ALICE, [user("a"), user("b")])

    await service.delete_conversation(cid, ALICE)

    assert await state(db, cid) == await state(db, "nothing-here")
    assert (await state(db, cid)).messages == 0
    with pytest.raises(ConversationNotFoundError):
        await service.get_conversation(cid, ALICE)


async def test_list_conversations_most_recently_active_first_with_cursor(
    service: ConversationService,
) -> None:
    ids = [await new_conversation(service) for _ in range(7)]
    await new_conversation(service, owner=BOB)
    await service.save_message(ids[2], "user", "bump", user_id=ALICE)
    expected = [ids[2], *reversed([i for i in ids if i != ids[2]])]

    seen: list[str] = []
    cursor = None
    while True:
        page = await service.list_conversations(ALICE, limit=3, cursor=cursor)
        seen.extend(c.id for c in page.items)
        assert len(page.items) <= 3
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert seen == expected


async def test_list_conversations_of_user_without_any_is_empty(
    service: ConversationService,
) -> None:
    page = await service.list_conversations("nobody")
    assert page.items == [] and page.next_cursor is None


# -- messages: pages in both directions ----------------------------------------------------


async def test_list_messages_pages_forward_and_backward(service: ConversationService) -> None:
    cid = await new_conversation(service)
    await service.save_conversation_messages(cid, ALICE, [user(f"m{i}") for i in range(1, 11)])

    async def walk(order: str) -> list[int]:
        seqs: list[int] = []
        cursor = None
        while True:
            page = await service.list_messages(cid, ALICE, limit=4, order=order, cursor=cursor)  # type: ignore[arg-type]
            seqs.extend(m.seq for m in page.items)
            if page.next_cursor is None:
                return seqs
            cursor = page.next_cursor

    assert await walk("asc") == list(range(1, 11))
    assert await walk("desc") == list(range(10, 0, -1))


async def test_list_messages_after_seq_follows_the_conversation(
    service: ConversationService,
) -> None:
    cid = await new_conversation(service)
    await service.save_conversation_messages(cid, ALICE, [user("a"), user("b"), user("c")])

    page = await service.list_messages(cid, ALICE, after_seq=1)
    empty = await service.list_messages(cid, ALICE, after_seq=3)

    assert [m.content for m in page.items] == ["b", "c"] and page.next_cursor is None
    assert empty.items == []


async def test_cursor_of_one_direction_is_rejected_in_the_other(
    service: ConversationService,
) -> None:
    cid = await new_conversation(service)
    await service.save_conversation_messages(cid, ALICE, [user("a"), user("b"), user("c")])
    page = await service.list_messages(cid, ALICE, limit=1)
    assert page.next_cursor is not None

    with pytest.raises(ValidationError) as raised:
        await service.list_messages(cid, ALICE, order="desc", cursor=page.next_cursor)
    assert raised.value.field == "cursor"


# -- edited cursors and out-of-range positions: a typed error, and the store works on ------
#
# A cursor comes back from the client; every field of it is checked before it reaches SQL.
# Naive times used to be compared with timezone-aware columns, 2**70 to fail inside asyncpg
# (leaving the connection mid-statement), a lone surrogate to fail encoding: all were 500s.


def forged(kind: str, **position: object) -> str:
    document = json.dumps({"v": 1, "k": kind, **position})  # ensure_ascii: "\ud800" survives
    return base64.urlsafe_b64encode(document.encode()).rstrip(b"=").decode()


AT = "2030-01-01T00:00:00+00:00"
FORGED_CONVERSATION_CURSORS = {
    "naive time": forged("conversations", t="2030-01-01T00:00:00", i="c1"),
    "date without time": forged("conversations", t="2030-01-01", i="c1"),
    "not a time": forged("conversations", t="yesterday", i="c1"),
    "time as a number": forged("conversations", t=1893456000, i="c1"),
    "year 0 in UTC": forged("conversations", t="0001-01-01T00:00:00+01:00", i="c1"),
    "long time text": forged("conversations", t=AT + " " * 100, i="c1"),
    "lone surrogate in id": forged("conversations", t=AT, i="c\ud800"),
    "NUL in id": forged("conversations", t=AT, i="c\x00"),
    "id too long": forged("conversations", t=AT, i="c" * 65),
    "id not an id": forged("conversations", t=AT, i="../etc"),
    "empty id": forged("conversations", t=AT, i=""),
    "id as a number": forged("conversations", t=AT, i=1),
    "missing id": forged("conversations", t=AT),
    "another list's": forged("messages-asc", s=1),
}


@pytest.mark.parametrize(
    "cursor", FORGED_CONVERSATION_CURSORS.values(), ids=list(FORGED_CONVERSATION_CURSORS)
)
async def test_edited_conversation_cursor_is_a_cursor_error_and_the_store_works_on(
    service: ConversationService, cursor: str
) -> None:
    ids = [await new_conversation(service) for _ in range(3)]

    with pytest.raises(ValidationError) as raised:
        await service.list_conversations(ALICE, limit=2, cursor=cursor)

    assert raised.value.field == "cursor"
    page = await service.list_conversations(ALICE, limit=5)
    assert sorted(c.id for c in page.items) == sorted(ids)


async def test_conversation_cursor_time_in_another_offset_is_the_same_position(
    service: ConversationService,
) -> None:
    for _ in range(5):
        await new_conversation(service)
    first = await service.list_conversations(ALICE, limit=2)
    assert first.next_cursor is not None
    raw = first.next_cursor + "=" * (-len(first.next_cursor) % 4)
    position = json.loads(base64.urlsafe_b64decode(raw))
    east = datetime.fromisoformat(position["t"]).astimezone(timezone(timedelta(hours=5)))
    edited = forged("conversations", t=east.isoformat(), i=position["i"])

    second = await service.list_conversations(ALICE, limit=2, cursor=edited)

    assert second == await service.list_conversations(ALICE, limit=2, cursor=first.next_cursor)
    assert not {c.id for c in first.items} & {c.id for c in second.items}


FORGED_SEQS = [2**70, 2**63, MAX_SEQ + 1, -1, 1.5, "3", True, None]


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("seq", FORGED_SEQS, ids=repr)
async def test_edited_message_cursor_is_a_cursor_error_and_the_store_works_on(
    service: ConversationService, order: Order, seq: object
) -> None:
    cid = await new_conversation(service)
    await service.save_conversation_messages(cid, ALICE, [user("a"), user("b")])

    with pytest.raises(ValidationError) as raised:
        await service.list_messages(
            cid, ALICE, order=order, cursor=forged(f"messages-{order}", s=seq)
        )

    assert raised.value.field == "cursor"
    page = await service.list_messages(cid, ALICE, order=order)
    assert len(page.items) == 2


async def test_message_cursor_at_the_largest_seq_is_accepted(service: ConversationService) -> None:
    cid = await new_conversation(service)
    await service.save_conversation_messages(cid, ALICE, [user("a"), user("b")])

    after = await service.list_messages(cid, ALICE, cursor=forged("messages-asc", s=MAX_SEQ))
    before = await service.list_messages(
        cid, ALICE, order="desc", cursor=forged("messages-desc", s=MAX_SEQ)
    )

    assert after.items == [] and [m.content for m in before.items] == ["b", "a"]


async def compact(service: ConversationService, cid: str, keep_last: int) -> object:
    async def summarize(messages: list[StoredMessage]) -> str:
        return "summary"

    return await service.compact(cid, ALICE, summarize, keep_last=keep_last)


Call = Callable[[ConversationService, str, int], Awaitable[object]]
POSITION_ARGUMENTS: dict[str, Call] = {
    "after_seq": lambda s, cid, n: s.list_messages(cid, ALICE, after_seq=n),
    "upto_seq": lambda s, cid, n: s.save_summary(cid, ALICE, "summary", upto_seq=n),
    "keep_last": lambda s, cid, n: compact(s, cid, n),
    "limit": lambda s, cid, n: s.list_messages(cid, ALICE, limit=n),
    "seq": lambda s, cid, n: s.get_message(cid, ALICE, n),
    "max_messages": lambda s, cid, n: s.get_agent_input(cid, ALICE, max_messages=n),
    "max_tokens": lambda s, cid, n: s.get_agent_input(cid, ALICE, max_tokens=n),
}


@pytest.mark.parametrize("value", [2**70, 2**63, -(2**70)], ids=repr)
@pytest.mark.parametrize("field", POSITION_ARGUMENTS)
async def test_integer_argument_beyond_its_range_is_a_limit_error_naming_it(
    db: Database, service: ConversationService, field: str, value: int
) -> None:
    cid = await new_conversation(service)
    await service.save_conversation_messages(cid, ALICE, [user("a"), user("b")])
    before = await state(db, cid)

    with pytest.raises(LimitExceededError) as raised:
        await POSITION_ARGUMENTS[field](service, cid, value)

    assert raised.value.field == field and raised.value.limit is not None
    assert str(raised.value.limit) in str(raised.value)
    assert await state(db, cid) == before
    assert [m.content for m in (await service.list_messages(cid, ALICE)).items] == ["a", "b"]


async def test_after_seq_names_its_limit(service: ConversationService) -> None:
    cid = await new_conversation(service)

    with pytest.raises(LimitExceededError) as raised:
        await service.list_messages(cid, ALICE, after_seq=2**70)

    assert raised.value.field == "after_seq" and raised.value.limit == MAX_SEQ
    assert (await service.list_messages(cid, ALICE, after_seq=MAX_SEQ)).items == []


# -- one message by its seq ------------------------------------------------------------------


async def test_get_message_returns_the_one_message_at_its_seq(
    service: ConversationService,
) -> None:
    cid = await new_conversation(service)
    turn: list[NewMessage | dict[str, Any]] = [
        user("Weather in Paris?"),
        NewMessage(role="assistant", tool_calls=[ToolCall("call_1", "get_weather", "{}")]),
        NewMessage(role="tool", content="18°C", tool_call_id="call_1", tool_name="get_weather"),
        {
            "role": "user",
            "content": [{"type": "text", "text": "And here?"}, IMAGE],
            "metadata": {"x": 1},
        },
    ]
    await service.save_conversation_messages(cid, ALICE, turn)
    listed = (await service.list_messages(cid, ALICE)).items

    found = [await service.get_message(cid, ALICE, seq) for seq in (1, 2, 3, 4)]

    assert found == listed
    assert found[1].tool_calls == (ToolCall("call_1", "get_weather", "{}"),)
    assert found[3].metadata == {"x": 1} and isinstance(found[3].content, tuple)


async def test_a_seq_the_conversation_does_not_hold_is_message_not_found(
    service: ConversationService,
) -> None:
    empty = await new_conversation(service)
    cid = await new_conversation(service)
    await service.save_conversation_messages(cid, ALICE, [user("a"), user("b")])

    for conversation_id, seq in ((cid, 3), (cid, MAX_SEQ), (empty, 1)):
        with pytest.raises(MessageNotFoundError) as raised:
            await service.get_message(conversation_id, ALICE, seq)
        assert (raised.value.conversation_id, raised.value.seq) == (conversation_id, seq)
        assert isinstance(raised.value, LookupError)
        assert not isinstance(raised.value, ConversationNotFoundError)
        assert f"seq {seq}" in str(raised.value)


@pytest.mark.parametrize("seq", [0, -1, MAX_SEQ + 1, 1.5, "1", True, None], ids=repr)
async def test_a_seq_that_is_no_position_is_a_validation_error_naming_seq(
    service: ConversationService, seq: object
) -> None:
    cid = await new_conversation(service)
    await service.save_message(cid, "user", "a", user_id=ALICE)

    with pytest.raises(ValidationError) as raised:
        await service.get_message(cid, ALICE, seq)  # type: ignore[arg-type]

    assert raised.value.field == "seq"


async def test_get_message_of_a_foreign_conversation_looks_missing_whatever_the_seq(
    service: ConversationService,
) -> None:
    cid = await new_conversation(service)
    await service.save_message(cid, "user", "secret", user_id=ALICE)

    for seq in (1, 2):
        with pytest.raises(ConversationNotFoundError) as raised:
            await service.get_message(cid, BOB, seq)
        assert str(raised.value) == f"Conversation not found: {cid!r}"
    with pytest.raises(ConversationNotFoundError):
        await service.get_message("no-such-conversation", ALICE, 1)


# -- summaries, newest first -----------------------------------------------------------------


async def summarized(service: ConversationService, upto: list[int]) -> str:
    """A conversation of ``max(upto)`` messages with a summary up to each seq in ``upto``."""
    cid = await new_conversation(service)
    last = max(upto)
    await service.save_conversation_messages(cid, ALICE, [user(f"m{i}") for i in range(last)])
    for seq in upto:
        await service.save_summary(cid, ALICE, f"up to {seq}", upto_seq=seq, metadata={"n": seq})
    return cid


async def test_list_summaries_pages_newest_first_with_the_cursor(
    service: ConversationService,
) -> None:
    cid = await summarized(service, [2, 3, 5, 8, 9])
    pages = []
    cursor = None
    while True:
        page = await service.list_summaries(cid, ALICE, limit=2, cursor=cursor)
        pages.append([s.upto_seq for s in page.items])
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert pages == [[9, 8], [5, 3], [2]]
    whole = await service.list_summaries(cid, ALICE, limit=5)
    assert [s.upto_seq for s in whole.items] == [9, 8, 5, 3, 2] and whole.next_cursor is None
    assert whole.items[0] == await service.get_summary(cid, ALICE)
    assert [(s.content, s.metadata) for s in whole.items[-2:]] == [
        ("up to 3", {"n": 3}),
        ("up to 2", {"n": 2}),
    ]
    assert all(s.conversation_id == cid and s.created_at.tzinfo is not None for s in whole.items)


async def test_list_summaries_of_a_conversation_without_any_is_empty(
    service: ConversationService,
) -> None:
    cid = await new_conversation(service)

    page = await service.list_summaries(cid, ALICE)

    assert page.items == [] and page.next_cursor is None


async def test_list_summaries_of_a_foreign_conversation_looks_missing(
    service: ConversationService,
) -> None:
    cid = await summarized(service, [1, 2, 3])
    cursor = (await service.list_summaries(cid, ALICE, limit=1)).next_cursor

    for who, conversation_id, after in ((BOB, cid, None), (BOB, cid, cursor), (ALICE, "x", None)):
        with pytest.raises(ConversationNotFoundError) as raised:
            await service.list_summaries(conversation_id, who, cursor=after)
        assert str(raised.value) == f"Conversation not found: {conversation_id!r}"


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "2"}, "limit"),
        ({"cursor": "garbage"}, "cursor"),
        ({"cursor": ""}, "cursor"),
        ({"cursor": forged("messages-desc", s=2)}, "cursor"),
        *(({"cursor": forged("summaries", s=seq)}, "cursor") for seq in FORGED_SEQS),
    ],
    ids=repr,
)
async def test_list_summaries_bad_limit_or_cursor_is_a_validation_error_naming_it(
    service: ConversationService, arguments: dict[str, object], field: str
) -> None:
    cid = await summarized(service, [1, 2])

    with pytest.raises(ValidationError) as raised:
        await service.list_summaries(cid, ALICE, **arguments)  # type: ignore[arg-type]

    assert raised.value.field == field
    assert len((await service.list_summaries(cid, ALICE)).items) == 2


async def test_summary_cursor_at_the_largest_seq_is_accepted(service: ConversationService) -> None:
    cid = await summarized(service, [1, 2])

    page = await service.list_summaries(cid, ALICE, cursor=forged("summaries", s=MAX_SEQ))

    assert [s.upto_seq for s in page.items] == [2, 1]
