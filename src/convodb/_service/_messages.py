"""``ConversationService``'s messages: appending (ordered, atomic, idempotent) and reading one
message by its seq, pages, and attachments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import select

from .. import _statements as sql
from .._cursor import decode_cursor, encode_cursor
from .._ids import new_ids
from .._message_input import MessageInput, check_batch
from .._parts import Part
from .._records import NewMessage, Page, StoredAttachment, StoredMessage, ToolCall
from .._types import utcnow
from .._validation import (
    BATCH_KEY_PREFIX,
    check_conversation_id,
    check_digest,
    check_idempotency_key,
    check_limit,
    check_seq,
    check_user_id,
)
from ..errors import (
    ConversationNotFoundError,
    IdempotencyKeyReuseError,
    MessageNotFoundError,
    ValidationError,
)
from ._base import NO_SEQ, Order, ServiceBase

__all__ = ["MessageMethods"]


class MessageMethods(ServiceBase):
    """:class:`convodb.ConversationService`'s message methods."""

    async def save_message(
        self,
        conversation_id: str,
        role: str,
        content: str | Sequence[Part | Mapping[str, Any]] | None,
        tool_name: str | None = None,
        tool_call_id: str | None = None,
        *,
        user_id: str,
        tool_calls: Sequence[ToolCall | Mapping[str, Any]] | None = None,
        metadata: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> StoredMessage:
        """Append one message to the user's conversation.

        Args:
            conversation_id: the conversation.
            role: ``"system"``, ``"user"``, ``"assistant"`` or ``"tool"``.
            content: the text, or a list of parts (records or dicts, see
                :class:`NewMessage`); may be ``None`` only on an assistant message with tool
                calls.
            tool_name: tool messages: the function that produced the result.
            tool_call_id: tool messages (required): the id of the call answered.
            user_id: the owner; required (the seed's version had no ownership check).
            tool_calls: assistant messages: the calls the model requested.
            metadata: an optional JSON object.
            key: an idempotency key; a retry with the same key stores nothing twice.

        Returns:
            The stored message, with its ``seq`` and ``id``.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
            ValidationError: the message is invalid; nothing was stored.
            IdempotencyKeyReuseError: ``key`` is stored with a different message.
        """
        message = {
            "role": role,
            "content": content,
            "tool_name": tool_name,
            "tool_call_id": tool_call_id,
            "tool_calls": tool_calls,
            "metadata": metadata,
            "key": key,
        }
        (stored,) = await self.save_conversation_messages(conversation_id, user_id, [message])
        return stored

    async def save_conversation_messages(
        self,
        conversation_id: str,
        user_id: str,
        messages: Sequence[NewMessage | Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> list[StoredMessage]:
        """Append messages atomically: all of them, in order, or none.

        Each message is a :class:`NewMessage` or a dict with the same keys (the seed's dicts
        work as they are). Messages whose ``key`` the conversation already holds are not
        stored again: the stored message is returned in their place.

        Args:
            conversation_id: the conversation.
            user_id: the owner.
            messages: the messages, oldest first.
            idempotency_key: makes the whole batch safe to retry (an HTTP
                ``Idempotency-Key``): a retry of the same batch stores nothing and returns the
                stored messages; a different batch under the same key (other messages, or
                more or fewer) is an :class:`IdempotencyKeyReuseError`. Messages then carry no
                ``key`` of their own.

        Returns:
            The stored messages, in the order given, with their ``seq`` and ``id``.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
            ValidationError: a message is invalid; nothing was stored.
            IdempotencyKeyReuseError: a key is stored with a different message.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        batch = check_batch(messages, self.limits)
        if idempotency_key is not None:
            batch = _keyed_batch(check_idempotency_key(idempotency_key), batch)
        own = self._owns()
        async with self._write(keyed=True):
            return await self._append(cid, uid, batch, idempotency_key, own=own)

    async def get_conversation_history(
        self, conversation_id: str, user_id: str, limit: int = 50, *, with_data: bool = False
    ) -> list[StoredMessage]:
        """The latest ``limit`` messages of the user's conversation, oldest first.

        Args:
            with_data: load the binary data of their parts (``data``, base64), as agent
                input does; otherwise parts carry only their ``attachment`` digest.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
            ValidationError: ``limit`` is not between 1 and ``limits.max_page_size``.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        n = check_limit(limit, self.limits)
        async with self._read(keyed=True) as own:
            messages = await self._owned_messages(sql.LATEST, cid, uid, own=own, n=n)
            messages.reverse()
            if with_data:
                messages = await self._with_attachment_data(messages, cid, uid)
        return messages

    async def get_message(self, conversation_id: str, user_id: str, seq: int) -> StoredMessage:
        """One message of the user's conversation, by its ``seq``.

        Args:
            conversation_id: the conversation.
            user_id: the owner.
            seq: the message's position, 1 to the conversation's ``last_seq``.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user (whatever
                ``seq`` is).
            MessageNotFoundError: it is the user's, but holds no message with that ``seq``
                (never had one, or it was removed).
            ValidationError: ``seq`` is not an integer from 1 to 2**62.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        position = check_seq("seq", seq, lowest=1)
        async with self._read(keyed=True) as own:
            found = await self._owned_messages(sql.MESSAGE_AT, cid, uid, own=own, seq=position)
        if not found:
            raise MessageNotFoundError(cid, position)
        return found[0]

    async def list_messages(
        self,
        conversation_id: str,
        user_id: str,
        *,
        limit: int = 100,
        order: Order = "asc",
        cursor: str | None = None,
        after_seq: int | None = None,
        with_data: bool = False,
    ) -> Page[StoredMessage]:
        """One page of the conversation's messages, in either direction.

        Args:
            conversation_id: the conversation.
            user_id: the owner.
            limit: page size, 1 to ``limits.max_page_size``.
            order: ``"asc"`` (oldest first) or ``"desc"`` (newest first).
            cursor: ``next_cursor`` of the previous page.
            after_seq: start after this ``seq`` (ascending order only): to follow a
                conversation, pass the last ``seq`` you have seen.
            with_data: load the binary data of the parts (``data``, base64).

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
            ValidationError: an argument is invalid.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        n = check_limit(limit, self.limits)
        if order not in ("asc", "desc"):
            raise ValidationError("order", f"must be 'asc' or 'desc'; got {order!r}")
        if after_seq is not None:
            if cursor is not None or order != "asc":
                raise ValidationError("after_seq", "cannot be combined with cursor or order='desc'")
            seq = check_seq("after_seq", after_seq)
        elif cursor is not None:
            position = decode_cursor(cursor, f"messages-{order}", {"s": int})
            seq = position["s"]
        else:
            seq = 0 if order == "asc" else NO_SEQ
        statement = sql.AFTER if order == "asc" else sql.BEFORE
        async with self._read(keyed=True) as own:
            items = await self._owned_messages(
                statement, cid, uid, own=own, n=n + 1, seq=seq, floor=0
            )
            more = len(items) > n
            del items[n:]
            if with_data:
                items = await self._with_attachment_data(items, cid, uid)
        next_cursor = None
        if more:
            next_cursor = encode_cursor(f"messages-{order}", s=items[-1].seq)
        return Page(items=items, next_cursor=next_cursor)

    async def get_attachment(
        self, conversation_id: str, user_id: str, sha256: str
    ) -> StoredAttachment:
        """The binary data a part of the user's conversation refers to (its ``attachment``).

        History reads return parts without their ``data``; agent-input windows load it; this
        returns it on its own, e.g. to show an image.

        Raises:
            ConversationNotFoundError: the conversation does not exist, belongs to another
                user, or holds no attachment with that digest (which of these is not told).
            ValidationError: ``sha256`` is not 64 lowercase hex digits.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        digest = check_digest("sha256", sha256)
        async with self._read() as own:
            params = {"cid": cid, "uid": uid, "sha256": digest}
            rows = await self._backend.rows(self.session, sql.ATTACHMENT, params, own=own)
        if not rows:
            raise ConversationNotFoundError(cid)
        return StoredAttachment(cid, *rows[0])

    async def _append(
        self,
        cid: str,
        uid: str,
        batch: list[MessageInput],
        batch_key: str | None = None,
        *,
        own: bool,
    ) -> list[StoredMessage]:
        owner = {"cid": cid, "uid": uid, "now": utcnow()}
        if self.api_key_id is not None:  # checked by the statement that reserves the seqs
            owner["key"] = self.api_key_id
        if not batch:
            await self._check_key(own=own)
            if await self._select_conversation(cid, uid) is None:
                raise ConversationNotFoundError(cid)
            return []
        keys = [m.key for m in batch if m.key is not None]
        if batch_key is not None:
            # Probe the key one past this batch: a stored batch that was longer has it.
            keys.append(f"{BATCH_KEY_PREFIX}{batch_key}:{len(batch)}")
        if not keys:
            return await self._insert(owner, batch, own=own)

        # Keyed batch: lock the conversation (and prove ownership) before looking keys up,
        # so that a concurrent retry of the same batch waits here and then finds the keys.
        await self._check_key(own=False)
        await self._lock(cid, uid)
        result = await self.session.execute(
            select(*sql.MSG_COLUMNS).where(
                sql.messages.c.conversation_id == cid, sql.messages.c.key.in_(keys)
            )
        )
        stored = {m.key: m for m in map(sql.message_record, result)}
        if batch_key is not None and stored and len(stored) != len(batch):
            # Some of the batch's keys are stored but not all, or the stored batch had more:
            # the key was used for a batch of another length.
            raise IdempotencyKeyReuseError(batch_key, batch=True)
        fresh = [m for m in batch if m.key is None or m.key not in stored]
        for m in batch:
            if m.key is not None and m.key in stored and not _same_message(m, stored[m.key]):
                if batch_key is not None:
                    raise IdempotencyKeyReuseError(batch_key, batch=True)
                raise IdempotencyKeyReuseError(m.key)
        inserted = iter(await self._insert(owner, fresh, own=False) if fresh else [])
        return [
            stored[m.key] if m.key is not None and m.key in stored else next(inserted)
            for m in batch
        ]

    async def _insert(
        self, owner: dict[str, Any], batch: list[MessageInput], *, own: bool
    ) -> list[StoredMessage]:
        """Reserve seqs for ``batch`` and insert it; ownership is proved by the same statement."""
        cid, now, count = owner["cid"], owner["now"], self.token_counter.count_message
        ids = new_ids(len(batch))
        rows = [
            {
                "id": ids[i],
                "conversation_id": cid,
                "role": m.role,
                "content": m.content if isinstance(m.content, str) else None,
                "parts": m.parts,
                "tool_calls": m.tool_calls,
                "tool_name": m.tool_name,
                "tool_call_id": m.tool_call_id,
                "metadata": m.metadata,
                "key": m.key,
                "token_count": count(m),
                "created_at": now,
            }
            for i, m in enumerate(batch)
        ]
        attachments = {
            a.sha256: {
                "conversation_id": cid,
                "sha256": a.sha256,
                "media_type": a.media_type,
                "size": len(a.data),
                "data": a.data,
                "created_at": now,
            }
            for m in batch
            for a in m.attachments
        }
        last_seq = await self._backend.append(
            self.session, owner, rows, own=own, attachments=list(attachments.values())
        )
        if last_seq is None:
            await self._check_key(own=own)
            raise ConversationNotFoundError(cid)
        first = last_seq - len(rows) + 1
        return [
            sql.new_message(
                r["id"],
                cid,
                first + i,
                m.role,
                m.content,
                tuple(ToolCall(**c) for c in m.tool_calls) if m.tool_calls else None,
                m.tool_name,
                m.tool_call_id,
                m.metadata,
                m.key,
                r["token_count"],
                now,
            )
            for i, (r, m) in enumerate(zip(rows, batch, strict=True))
        ]


def _keyed_batch(idempotency_key: str, batch: list[MessageInput]) -> list[MessageInput]:
    """The batch with per-message keys derived from its idempotency key: ``idem:<key>:<i>``.

    The prefix keeps them apart from keys clients give messages (which may not use it).
    """
    for i, message in enumerate(batch):
        if message.key is not None:
            raise ValidationError(
                f"messages[{i}].key", "cannot be combined with an idempotency_key for the batch"
            )
    return [replace(m, key=f"{BATCH_KEY_PREFIX}{idempotency_key}:{i}") for i, m in enumerate(batch)]


def _same_message(new: MessageInput, stored: StoredMessage) -> bool:
    """Whether a retried message is the one stored under its key."""
    return (
        new.role == stored.role
        and new.content == stored.content
        and new.tool_name == stored.tool_name
        and new.tool_call_id == stored.tool_call_id
        and (new.tool_calls or None)
        == ([c.to_dict() for c in stored.tool_calls] if stored.tool_calls else None)
        and new.metadata == stored.metadata
    )
