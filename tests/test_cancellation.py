"""A request cancelled mid-write (a timeout, a client gone) leaves nothing behind.

No partial batch, and no lock: the next writer gets through at once.
"""

from __future__ import annotations

import asyncio
import contextlib

from convodb import ConversationService, Database

from ._store import state


async def test_cancelled_writes_store_whole_batches_and_leave_no_lock(db: Database) -> None:
    async with db.session() as session:
        cid = (await ConversationService(session).create_conversation("alice")).id

    async def write(attempt: int) -> None:
        async with db.session() as session:
            service = ConversationService(session)
            batch = [{"role": "user", "content": f"{attempt}:{i}"} for i in range(3)]
            if attempt % 3 == 0:  # the single-statement path
                await service.save_conversation_messages(cid, "alice", batch)
            else:  # the keyed path: several statements in one transaction
                await service.save_conversation_messages(
                    cid, "alice", batch, idempotency_key=f"t{attempt}"
                )

    for attempt in range(60):
        task = asyncio.create_task(write(attempt))
        await asyncio.sleep(0.0002 * (attempt % 10))  # cancel at varying points
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # The next writer must not find the database locked by the cancelled one.
        async with db.session() as session:
            await asyncio.wait_for(
                ConversationService(session).save_message(cid, "user", "probe", user_id="alice"),
                timeout=5,
            )

    async with db.session() as session:
        history = await ConversationService(session).get_conversation_history(
            cid, "alice", limit=1000
        )
    assert [m.seq for m in history] == list(range(1, len(history) + 1))
    assert len(history) == (await state(db, cid)).messages
    sizes: dict[str, int] = {}
    for m in history:
        if m.content != "probe":
            batch = m.text.split(":")[0]
            sizes[batch] = sizes.get(batch, 0) + 1
    assert set(sizes.values()) <= {3}, sizes  # whole batches or none
