"""``ConversationService``'s removal of messages: the newest or oldest few, chosen ones, or all.

What the frameworks' memories need (popping the last item, clearing a session, a FIFO that
drops its oldest turns, a graph state that removes a message), designed once here:

- **Under the conversation's lock.** The messages to remove are chosen after the lock is
  taken, so two concurrent ``remove_messages(newest=1)`` remove two different messages, and
  an append waits for a removal to commit (and the reverse).
- **A seq is never reused.** ``last_seq`` stays the highest seq ever assigned; the next append
  continues after it, so a removed message leaves a gap. A reader that saw seq k still never
  finds a message below k appear.
- **Counts stay exact.** ``conversations.removed_count`` grows by the number removed, in the
  same transaction: the conversation holds ``last_seq - removed_count`` messages, and windows
  count what they left out without a scan while nothing was removed.
- **Summaries and attachments.** A summary keeps standing in for the messages it covered,
  removed or not; clearing the conversation deletes its summaries. Binary data stays while the
  conversation exists, unless it is cleared: a part elsewhere may refer to the same digest.
- **Idempotency keys go with their messages**: a retry of a removed message's append stores it
  again. A batch appended with an ``idempotency_key`` is the exception while some of its
  messages remain: its retry is refused (``IdempotencyKeyReuseError``), since convodb cannot
  tell it from a different batch sent under the same key.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import update

from .. import _statements as sql
from .._records import StoredMessage
from .._types import utcnow
from .._validation import check_conversation_id, check_limit, check_seq, check_user_id
from ..errors import LimitExceededError, ValidationError
from ._base import NO_SEQ, ServiceBase

__all__ = ["RemovalMethods"]


class RemovalMethods(ServiceBase):
    """:class:`convodb.ConversationService`'s methods that remove messages."""

    async def remove_messages(
        self,
        conversation_id: str,
        user_id: str,
        *,
        newest: int | None = None,
        oldest: int | None = None,
        seqs: Sequence[int] | None = None,
    ) -> list[StoredMessage]:
        """Remove messages from the user's conversation and return them.

        Exactly one of ``newest``, ``oldest`` and ``seqs`` says which. They are chosen under
        the conversation's lock, so concurrent calls remove different messages. The
        conversation keeps its ``last_seq``: the next message appended gets the seq after it,
        never a removed one's.

        To replace messages atomically, remove and append in one transaction: a service with
        ``commit=False`` in your own ``session.begin()`` holds the lock from the removal to
        the commit.

        Args:
            conversation_id: the conversation.
            user_id: the owner.
            newest: remove the newest this many (fewer if it holds fewer).
            oldest: remove the oldest this many.
            seqs: remove the messages with these seqs; seqs it does not hold are ignored.

        Returns:
            The removed messages, oldest first, with their parts' binary data loaded, so
            that they can be handed back or stored again as they were. Empty when nothing
            matched.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
            ValidationError: not exactly one selector, or one out of range (a count from 1 to
                ``limits.max_page_size``; at most that many seqs, each from 1 to 2**62).
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        given = {"newest": newest, "oldest": oldest, "seqs": seqs}
        chosen = [name for name, value in given.items() if value is not None]
        if len(chosen) != 1:
            raise ValidationError(
                "newest", f"give exactly one of newest, oldest and seqs; got {chosen or 'none'}"
            )
        params: dict[str, object] = {"cid": cid, "uid": uid, "floor": 0}
        if newest is not None:
            statement = sql.BEFORE
            params.update(n=check_limit(newest, self.limits, "newest"), seq=NO_SEQ)
        elif oldest is not None:
            statement = sql.AFTER
            params.update(n=check_limit(oldest, self.limits, "oldest"), seq=0)
        else:
            statement = sql.AT_SEQS
            params["seqs"] = _check_seqs(seqs, self.limits.max_page_size)
        async with self._write():
            await self._lock(cid, uid)
            rows = (await self.session.execute(statement, params)).all()
            found = sorted(map(sql.message_record, rows), key=lambda m: m.seq)
            if not found:
                return []
            found = await self._with_attachment_data(found, cid, uid)
            m = sql.messages.c
            await self.session.execute(
                sql.messages.delete().where(
                    m.conversation_id == cid, m.seq.in_([x.seq for x in found])
                )
            )
            await self._count_removed(cid, len(found))
        return found

    async def clear_messages(self, conversation_id: str, user_id: str) -> int:
        """Remove every message of the user's conversation, with its summaries and binary
        data; the conversation stays (its id, owner, title, metadata and ``last_seq``).

        Returns:
            How many messages were removed.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        async with self._write():
            await self._lock(cid, uid)
            removed, _, _ = await self._delete_contents(cid)
            if removed:
                await self._count_removed(cid, removed)
            else:  # summaries without messages (all removed before) are still cleared
                await self.session.execute(
                    update(sql.conversations)
                    .where(sql.conversations.c.id == cid)
                    .values(updated_at=utcnow())
                )
        return removed

    async def _count_removed(self, cid: str, n: int) -> None:
        """Record ``n`` messages removed from the locked conversation."""
        c = sql.conversations.c
        await self.session.execute(
            update(sql.conversations)
            .where(c.id == cid)
            .values(removed_count=c.removed_count + n, updated_at=utcnow())
        )


def _check_seqs(seqs: object, most: int) -> list[int]:
    if isinstance(seqs, str | bytes) or not isinstance(seqs, Sequence):
        raise ValidationError("seqs", f"must be a sequence of integers, not {type(seqs).__name__}")
    if not seqs:
        raise ValidationError("seqs", "must not be empty")
    if len(seqs) > most:
        raise LimitExceededError("seqs", f"holds {len(seqs)} seqs; the limit is {most}", limit=most)
    return sorted({check_seq(f"seqs[{i}]", s, lowest=1) for i, s in enumerate(seqs)})
