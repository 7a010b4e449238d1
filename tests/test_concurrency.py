"""Concurrent appends to one conversation: gap-free, in order, never behind a reader."""

from __future__ import annotations

import asyncio

from convodb import ConversationService, Database

WRITERS, PER_WRITER = 20, 100


async def test_concurrent_appends_are_gap_free_ordered_and_never_behind_a_reader(
    db: Database,
) -> None:
    async with db.session() as session:
        cid = (await ConversationService(session).create_conversation("alice")).id
    done = asyncio.Event()

    async def writer(w: int) -> None:
        async with db.session() as session:
            service = ConversationService(session)
            for i in range(PER_WRITER):
                await service.save_message(cid, "user", f"{w}:{i}", user_id="alice")

    async def reader() -> list[int]:
        """Follow the conversation by "after the last seq I saw", as a live UI would."""
        seen: list[int] = []
        while True:
            finished = done.is_set()
            async with db.session() as session:
                page = await ConversationService(session).list_messages(
                    cid, "alice", after_seq=seen[-1] if seen else 0, limit=1000
                )
            # A message committed behind one already seen would leave a hole here that a
            # later poll could never fill.
            seqs = [m.seq for m in page.items]
            assert seqs == list(range(len(seen) + 1, len(seen) + 1 + len(seqs)))
            seen.extend(seqs)
            if finished and not seqs:
                return seen
            await asyncio.sleep(0.005)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    done.set()
    seen = await reading

    total = WRITERS * PER_WRITER
    assert seen == list(range(1, total + 1))
    history = []
    async with db.session() as session:
        service, cursor = ConversationService(session), None
        while True:
            page = await service.list_messages(cid, "alice", limit=500, cursor=cursor)
            history.extend(page.items)
            if (cursor := page.next_cursor) is None:
                break
    assert [m.seq for m in history] == list(range(1, total + 1))
    assert len({m.content for m in history}) == total
    for w in range(WRITERS):
        mine = [m.text for m in history if m.text.startswith(f"{w}:")]
        assert mine == [f"{w}:{i}" for i in range(PER_WRITER)]


async def test_concurrent_batches_stay_contiguous(db: Database) -> None:
    async with db.session() as session:
        cid = (await ConversationService(session).create_conversation("alice")).id

    async def writer(w: int) -> list[int]:
        async with db.session() as session:
            stored = await ConversationService(session).save_conversation_messages(
                cid, "alice", [{"role": "user", "content": f"{w}:{i}"} for i in range(10)]
            )
        return [m.seq for m in stored]

    batches = await asyncio.gather(*(writer(w) for w in range(10)))

    for seqs in batches:
        assert seqs == list(range(seqs[0], seqs[0] + 10))
    assert sorted(s for seqs in batches for s in seqs) == list(range(1, 101))
