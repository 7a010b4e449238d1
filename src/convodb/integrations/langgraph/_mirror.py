"""Storing a ``messages`` value as the conversation's messages: the difference from what the
conversation holds, applied in the caller's transaction."""

from __future__ import annotations

from langchain_core.messages import BaseMessage
from langgraph.checkpoint.serde.base import SerializerProtocol
from sqlalchemy.ext.asyncio import AsyncSession

from ..._records import NewMessage, StoredMessage
from ..._service import ConversationService
from ..._service import _checkpoints as store
from ._messages import from_stored, same
from ._support import live_messages

__all__ = ["mirror"]


async def mirror(
    session: AsyncSession,
    service: ConversationService,
    cid: str,
    uid: str,
    pairs: list[tuple[BaseMessage, NewMessage]],
    serde: SerializerProtocol,
    current: list[StoredMessage] | None = None,
) -> list[StoredMessage]:
    """Make the conversation's messages equal ``pairs``: keep those it holds already
    (same id, equal message) while they come in the list's order, remove the others, and
    append the rest of the list after them. Returns the conversation's messages then, which
    are the list's.

    Args:
        current: the conversation's messages, when the caller knows them (read otherwise).
    """
    # The caller holds the conversation's lock: the messages read next stay the
    # conversation's until the commit, so a concurrent put diffs against what this one leaves.
    if current is None:
        current = await live_messages(service, cid, uid)
    kept: list[StoredMessage] = []
    stale: list[int] = []
    j = 0
    i = 0
    while i < len(pairs) and j < len(current):
        if same(current[j], pairs[i][1]):
            kept.append(current[j])
            i += 1
        else:
            stale.append(current[j].seq)
        j += 1
    stale.extend(m.seq for m in current[j:])
    for start in range(0, len(stale), service.limits.max_page_size):
        removed = await service.remove_messages(
            cid, uid, seqs=stale[start : start + service.limits.max_page_size]
        )
        await store.save_copies(
            session, cid, [(m.seq, *serde.dumps_typed(from_stored(m))) for m in removed]
        )
    batch = service.limits.max_batch_messages
    rest = [new for _, new in pairs[i:]]
    for start in range(0, len(rest), batch):
        kept.extend(await service.save_conversation_messages(cid, uid, rest[start : start + batch]))
    return kept
