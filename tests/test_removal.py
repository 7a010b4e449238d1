"""Removing messages, on every database: which ones, under the lock, seqs never reused, and
every count and window still exact once seqs have gaps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from convodb import (
    ConversationNotFoundError,
    ConversationService,
    Database,
    LimitExceededError,
    ValidationError,
)
from convodb._service import AdminService
from convodb.errors import MessageNotFoundError

from ._store import state
from .test_parts_store import png

ALICE, BOB = "alice", "bob"


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


async def conversation_of(service: ConversationService, n: int, owner: str = ALICE) -> str:
    cid = (await service.create_conversation(owner)).id
    if n:
        await service.save_conversation_messages(
            cid, owner, [user(f"m{i}") for i in range(1, n + 1)]
        )
    return cid


async def texts(service: ConversationService, cid: str, owner: str = ALICE) -> list[str]:
    page = await service.list_messages(cid, owner, limit=1000)
    return [m.text for m in page.items]


# -- which messages ------------------------------------------------------------------------


async def test_newest_removes_the_newest_and_returns_them_oldest_first(
    service: ConversationService,
) -> None:
    cid = await conversation_of(service, 5)

    removed = await service.remove_messages(cid, ALICE, newest=2)

    assert [(m.seq, m.text) for m in removed] == [(4, "m4"), (5, "m5")]
    assert await texts(service, cid) == ["m1", "m2", "m3"]
    conversation = await service.get_conversation(cid, ALICE)
    assert (conversation.last_seq, conversation.message_count) == (5, 3)


async def test_oldest_and_chosen_seqs(service: ConversationService) -> None:
    cid = await conversation_of(service, 6)

    assert [m.seq for m in await service.remove_messages(cid, ALICE, oldest=2)] == [1, 2]
    # Seqs it does not hold (1 is gone, 99 never was) are ignored; duplicates count once
    removed = await service.remove_messages(cid, ALICE, seqs=[5, 1, 99, 5, 3])

    assert [m.seq for m in removed] == [3, 5]
    assert await texts(service, cid) == ["m4", "m6"]
    assert (await service.get_conversation(cid, ALICE)).message_count == 2


async def test_more_than_it_holds_removes_what_there_is(service: ConversationService) -> None:
    cid = await conversation_of(service, 2)

    assert len(await service.remove_messages(cid, ALICE, newest=10)) == 2
    assert await service.remove_messages(cid, ALICE, newest=1) == []
    assert await service.remove_messages(cid, ALICE, oldest=3) == []
    assert (await service.get_conversation(cid, ALICE)).message_count == 0


async def test_a_seq_is_never_reused(db: Database, service: ConversationService) -> None:
    cid = await conversation_of(service, 3)
    await service.remove_messages(cid, ALICE, newest=3)

    stored = await service.save_message(cid, "user", "after", user_id=ALICE)

    assert stored.seq == 4
    assert [m.seq for m in (await service.list_messages(cid, ALICE)).items] == [4]
    assert (await state(db, cid)).last_seq == 4
    with pytest.raises(MessageNotFoundError):
        await service.get_message(cid, ALICE, 3)


async def test_removed_parts_come_back_with_their_data(service: ConversationService) -> None:
    cid = await conversation_of(service, 0)
    image = png(2, 2)
    parts = [
        {"type": "text", "text": "look"},
        {"type": "image", "data": image, "media_type": "image/png"},
    ]
    await service.save_message(cid, "user", parts, user_id=ALICE)

    (removed,) = await service.remove_messages(cid, ALICE, newest=1)

    assert isinstance(removed.content, tuple)
    assert removed.content[1].data == image  # type: ignore[union-attr]
    # ... so it can be stored again as it was
    again = await service.save_message(cid, "user", list(removed.content), user_id=ALICE)
    (read,) = await service.get_conversation_history(cid, ALICE, with_data=True)
    assert read.seq == again.seq == 2
    assert read.content == removed.content


async def test_a_removed_messages_key_can_be_stored_again(service: ConversationService) -> None:
    cid = await conversation_of(service, 0)
    first = await service.save_message(cid, "user", "hi", user_id=ALICE, key="k1")
    await service.remove_messages(cid, ALICE, seqs=[first.seq])

    retried = await service.save_message(cid, "user", "hi", user_id=ALICE, key="k1")

    assert retried.seq == 2


# -- bad input and ownership ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({}, ValidationError, "newest"),
        ({"newest": 1, "oldest": 1}, ValidationError, "newest"),
        ({"newest": 0}, LimitExceededError, "newest"),
        ({"oldest": 1001}, LimitExceededError, "oldest"),
        ({"newest": True}, ValidationError, "newest"),
        ({"seqs": []}, ValidationError, "seqs"),
        ({"seqs": "12"}, ValidationError, "seqs"),
        ({"seqs": [1, 0]}, LimitExceededError, "seqs[1]"),
        ({"seqs": list(range(1, 1002))}, LimitExceededError, "seqs"),
    ],
)
async def test_bad_selectors_name_the_field_and_remove_nothing(
    service: ConversationService, kwargs: dict[str, Any], error: type[Exception], field: str
) -> None:
    cid = await conversation_of(service, 3)

    with pytest.raises(error) as raised:
        await service.remove_messages(cid, ALICE, **kwargs)

    assert raised.value.field == field  # type: ignore[attr-defined]
    assert await texts(service, cid) == ["m1", "m2", "m3"]


async def test_another_users_conversation_is_not_found_and_keeps_its_messages(
    service: ConversationService,
) -> None:
    cid = await conversation_of(service, 3, owner=BOB)

    with pytest.raises(ConversationNotFoundError):
        await service.remove_messages(cid, ALICE, newest=1)
    with pytest.raises(ConversationNotFoundError):
        await service.remove_messages(cid, ALICE, seqs=[1, 2, 3])
    with pytest.raises(ConversationNotFoundError):
        await service.clear_messages(cid, ALICE)

    assert await texts(service, cid, BOB) == ["m1", "m2", "m3"]


# -- concurrency ---------------------------------------------------------------------------


async def test_concurrent_removals_of_the_newest_remove_each_message_once(db: Database) -> None:
    async with db.session() as session:
        cid = await conversation_of(ConversationService(session), 8)

    async def pop() -> list[int]:
        async with db.session() as session:
            removed = await ConversationService(session).remove_messages(cid, ALICE, newest=1)
            return [m.seq for m in removed]

    popped = await asyncio.gather(*(pop() for _ in range(6)))

    assert sorted(s for seqs in popped for s in seqs) == [3, 4, 5, 6, 7, 8]
    async with db.session() as session:
        assert await texts(ConversationService(session), cid) == ["m1", "m2"]


async def test_removals_and_appends_interleaved_keep_seqs_unique_and_increasing(
    db: Database,
) -> None:
    async with db.session() as session:
        cid = await conversation_of(ConversationService(session), 4)

    async def append(i: int) -> int:
        async with db.session() as session:
            stored = await ConversationService(session).save_message(
                cid, "user", f"a{i}", user_id=ALICE
            )
            return stored.seq

    async def pop() -> int:
        async with db.session() as session:
            return len(await ConversationService(session).remove_messages(cid, ALICE, newest=1))

    results = await asyncio.gather(*(append(i) if i % 2 else pop() for i in range(12)))

    appended = [r for i, r in enumerate(results) if i % 2]
    removed = sum(r for i, r in enumerate(results) if not i % 2)
    assert sorted(appended) == list(range(5, 11))  # six appends, seqs never reused
    async with db.session() as session:
        service = ConversationService(session)
        held = (await service.list_messages(cid, ALICE, limit=100)).items
        conversation = await service.get_conversation(cid, ALICE)
    assert [m.seq for m in held] == sorted({m.seq for m in held})
    assert conversation.last_seq == 10
    assert conversation.message_count == len(held) == 4 + 6 - removed


async def test_remove_and_append_in_one_transaction_replace_atomically(db: Database) -> None:
    async with db.session() as session:
        cid = await conversation_of(ConversationService(session), 3)

    async with db.session() as session, session.begin():
        service = ConversationService(session, commit=False)
        (newest,) = await service.remove_messages(cid, ALICE, newest=1)
        await service.save_message(cid, "user", newest.text + " (edited)", user_id=ALICE)

    async with db.session() as session:
        with pytest.raises(RuntimeError):
            async with session.begin():
                service = ConversationService(session, commit=False)
                await service.remove_messages(cid, ALICE, oldest=2)
                raise RuntimeError("the caller fails before committing")
    async with db.session() as session:
        service = ConversationService(session)
        assert await texts(service, cid) == ["m1", "m2", "m3 (edited)"]
        assert [m.seq for m in (await service.list_messages(cid, ALICE)).items] == [1, 2, 4]
        assert (await service.get_conversation(cid, ALICE)).message_count == 3


# -- clearing ------------------------------------------------------------------------------


async def test_clear_removes_messages_summaries_and_data_and_keeps_the_conversation(
    db: Database, service: ConversationService
) -> None:
    cid = (await service.create_conversation(ALICE, title="kept", metadata={"k": 1})).id
    image = {"type": "image", "data": png(1, 1), "media_type": "image/png"}
    await service.save_conversation_messages(
        cid, ALICE, [user("a"), {"role": "user", "content": [image]}]
    )
    await service.save_summary(cid, ALICE, "about a", upto_seq=1)

    assert await service.clear_messages(cid, ALICE) == 2

    conversation = await service.get_conversation(cid, ALICE)
    assert (conversation.title, conversation.metadata) == ("kept", {"k": 1})
    assert (conversation.last_seq, conversation.message_count) == (2, 0)
    assert await service.get_summary(cid, ALICE) is None
    assert (await state(db, cid)).attachments == 0
    assert (await service.save_message(cid, "user", "again", user_id=ALICE)).seq == 3
    assert await service.clear_messages(cid, ALICE) == 1
    assert await service.clear_messages(cid, ALICE) == 0


# -- windows, compaction and operators once seqs have gaps ---------------------------------


async def test_a_window_counts_what_it_left_out_exactly_despite_gaps(
    service: ConversationService,
) -> None:
    cid = await conversation_of(service, 10)
    await service.remove_messages(cid, ALICE, seqs=[2, 3, 9])

    agent_input = await service.get_agent_input(cid, ALICE, max_messages=3, format="plain")
    assert [m["content"] for m in agent_input.messages] == ["m7", "m8", "m10"]
    assert agent_input.dropped == 4  # m1, m4, m5, m6: 7 held, 3 kept

    await service.save_summary(cid, ALICE, "up to 5", upto_seq=5)
    agent_input = await service.get_agent_input(cid, ALICE, max_messages=2, format="plain")
    assert [m["content"] for m in agent_input.messages[1:]] == ["m8", "m10"]
    assert agent_input.dropped == 2  # m6, m7: after the summary, 4 held, 2 kept


async def test_compaction_keeps_the_newest_keep_last_messages_despite_gaps(
    service: ConversationService,
) -> None:
    cid = await conversation_of(service, 10)
    await service.remove_messages(cid, ALICE, seqs=[8, 9])
    covered: list[str] = []

    async def summarize(messages: list[Any]) -> str:
        covered.extend(m.text for m in messages)
        return "summary"

    summary = await service.compact(cid, ALICE, summarize, keep_last=3)

    assert summary is not None and summary.upto_seq == 5
    assert covered == ["m1", "m2", "m3", "m4", "m5"]  # m6, m7, m10 kept
    await service.remove_messages(cid, ALICE, newest=1)
    assert await service.compact(cid, ALICE, summarize, keep_last=2) is None  # m6, m7 left


async def test_export_and_import_keep_the_gaps_and_the_count(
    tmp_path: Any, db: Database, service: ConversationService
) -> None:
    cid = await conversation_of(service, 5)
    await service.remove_messages(cid, ALICE, seqs=[2, 4])
    exported = tmp_path / "export.jsonl"
    async with db.session() as session:
        with exported.open("w") as out:
            admin = AdminService(session)
            async for record in admin.export():
                out.write(admin.export_line(record))

    target = Database(f"sqlite+aiosqlite:///{tmp_path / 'target.db'}")
    try:
        await target.create_all()
        async with target.session() as session:
            report = await AdminService(session).import_file(exported)
            assert report.created == 1
            copy = await ConversationService(session).get_conversation(cid, ALICE)
            seqs = [
                m.seq for m in (await ConversationService(session).list_messages(cid, ALICE)).items
            ]
    finally:
        await target.dispose()
    assert seqs == [1, 3, 5]
    assert (copy.last_seq, copy.message_count) == (5, 3)


async def test_purge_dry_run_counts_the_messages_held(
    db: Database, service: ConversationService
) -> None:
    cid = await conversation_of(service, 4)
    await service.remove_messages(cid, ALICE, newest=3)

    async with db.session() as session:
        report = await AdminService(session).purge(datetime.now(UTC), dry_run=True)

    assert (report.conversations, report.messages) == (1, 1)


async def test_a_locked_conversation_holds_off_appends_until_the_lock_ends(db: Database) -> None:
    async with db.session() as session:
        cid = await conversation_of(ConversationService(session), 2)
        with pytest.raises(RuntimeError):
            await ConversationService(session).lock_conversation(cid, ALICE)
    order: list[str] = []

    async def append() -> None:
        async with db.session() as session:
            await ConversationService(session).save_message(cid, "user", "late", user_id=ALICE)
            order.append("appended")

    async with db.session() as session, session.begin():
        service = ConversationService(session, commit=False)
        locked = await service.lock_conversation(cid, ALICE)
        waiting = asyncio.create_task(append())
        await asyncio.sleep(0.3)  # the append waits on the lock, however long this takes
        held = await texts(service, cid)
        await service.remove_messages(cid, ALICE, seqs=[1])
        order.append("replaced")
    await waiting

    assert (locked.last_seq, held) == (2, ["m1", "m2"])
    assert order == ["replaced", "appended"]
    async with db.session() as session:
        assert await texts(ConversationService(session), cid) == ["m2", "late"]
    async with db.session() as session, session.begin():
        with pytest.raises(ConversationNotFoundError):
            await ConversationService(session, commit=False).lock_conversation(cid, BOB)
