"""``ConversationService``'s conversations: create, get, update, delete, list."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update

from .. import _statements as sql
from .._cursor import decode_cursor, encode_cursor
from .._ids import new_id
from .._records import Page, StoredConversation
from .._types import utcnow
from .._validation import (
    check_conversation_id,
    check_limit,
    check_metadata,
    check_title,
    check_user_id,
)
from ..errors import ConversationExistsError, ConversationNotFoundError
from ._base import UNSET, ServiceBase

__all__ = ["ConversationMethods"]


class ConversationMethods(ServiceBase):
    """:class:`convodb.ConversationService`'s conversation methods."""

    async def create_conversation(
        self,
        user_id: str,
        *,
        conversation_id: str | None = None,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> StoredConversation:
        """Create a conversation owned by ``user_id``.

        Args:
            user_id: the owner.
            conversation_id: the id to use; by default a new time-ordered UUID.
            title: an optional title.
            metadata: an optional JSON object.

        Raises:
            ConversationExistsError: ``conversation_id`` is already taken.
            ValidationError: an argument is invalid.
        """
        uid = check_user_id(user_id)
        cid = new_id() if conversation_id is None else check_conversation_id(conversation_id)
        values = _new_conversation(
            cid, uid, check_title(title), check_metadata("metadata", metadata, self.limits)
        )
        async with self._write():
            row = await self._insert_conversation(values)
        if row is None:
            raise ConversationExistsError(cid)
        return sql.conversation_record(row)

    async def get_or_create_conversation(
        self,
        conversation_id: str | None,
        user_id: str,
        *,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> StoredConversation:
        """Get the user's conversation, creating it when no conversation has that id.

        ``conversation_id=None`` always creates a new conversation with a fresh id.

        Raises:
            ConversationNotFoundError: the id belongs to another user's conversation.
            ValidationError: an argument is invalid.
        """
        if conversation_id is None:
            return await self.create_conversation(user_id, title=title, metadata=metadata)
        cid = check_conversation_id(conversation_id)
        uid = check_user_id(user_id)
        values = _new_conversation(
            cid, uid, check_title(title), check_metadata("metadata", metadata, self.limits)
        )
        async with self._write():
            row = await self._select_conversation(cid, uid)
            if row is None:
                # INSERT ... ON CONFLICT DO NOTHING: a conversation created meanwhile, by this
                # user or another, makes it insert nothing instead of raising IntegrityError.
                row = await self._insert_conversation(values) or await self._select_conversation(
                    cid, uid
                )
        if row is None:
            raise ConversationNotFoundError(cid)
        return sql.conversation_record(row)

    async def get_conversation(self, conversation_id: str, user_id: str) -> StoredConversation:
        """The user's conversation.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        async with self._read():
            row = await self._select_conversation(cid, uid)
        if row is None:
            raise ConversationNotFoundError(cid)
        return sql.conversation_record(row)

    async def lock_conversation(self, conversation_id: str, user_id: str) -> StoredConversation:
        """Lock the user's conversation until your transaction ends, and return it as it is
        then: appends and removals by others wait, so what you read next stays current until
        you commit. For read-modify-write in a transaction of your own (a service with
        ``commit=False``), e.g. replacing messages after comparing them with new ones.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
            RuntimeError: the service commits each call (``commit=True``), so the lock would
                end before this returns.
        """
        if self._commit:
            raise RuntimeError(
                "lock_conversation needs a service with commit=False inside your transaction"
            )
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        c = sql.conversations.c
        # The lock and the read in one statement where the database returns rows from an
        # UPDATE: a no-op write takes the row lock (SQLite: the write lock) and proves owner.
        lock = (
            update(sql.conversations)
            .where(c.id == cid, c.user_id == uid)
            .values(last_seq=c.last_seq)
        )
        async with self._write():
            row = await self._backend.update_returning(self.session, lock, sql.CONV_COLUMNS)
        if row is None:
            raise ConversationNotFoundError(cid)
        return sql.conversation_record(row)

    async def update_conversation(
        self,
        conversation_id: str,
        user_id: str,
        *,
        title: str | None = UNSET,
        metadata: Mapping[str, Any] = UNSET,
    ) -> StoredConversation:
        """Change the title and/or replace the metadata; ``updated_at`` moves.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
            ValidationError: an argument is invalid.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        values: dict[str, Any] = {"updated_at": utcnow()}
        if title is not UNSET:
            values["title"] = check_title(title)
        if metadata is not UNSET:
            values["metadata"] = check_metadata("metadata", metadata, self.limits)
        statement = (
            update(sql.conversations)
            .where(sql.conversations.c.id == cid, sql.conversations.c.user_id == uid)
            .values(values)
        )
        async with self._write():
            row = await self._backend.update_returning(self.session, statement, sql.CONV_COLUMNS)
        if row is None:
            raise ConversationNotFoundError(cid)
        return sql.conversation_record(row)

    async def delete_conversation(self, conversation_id: str, user_id: str) -> None:
        """Delete the conversation and all its messages.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        async with self._write():
            await self._lock(cid, uid)  # ownership first; then nothing can append meanwhile
            await self._delete_rows(cid)

    async def list_conversations(
        self, user_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[StoredConversation]:
        """The user's conversations, most recently active (``updated_at``) first.

        Args:
            user_id: the owner.
            limit: page size, 1 to ``limits.max_page_size``.
            cursor: ``next_cursor`` of the previous page.
        """
        uid = check_user_id(user_id)
        n = check_limit(limit, self.limits)
        statement = select(*sql.CONV_COLUMNS).where(sql.conversations.c.user_id == uid)
        if cursor is not None:
            position = decode_cursor(
                cursor, "conversations", {"t": datetime, "i": check_conversation_id}
            )
            at = position["t"]
            statement = statement.where(
                or_(
                    sql.conversations.c.updated_at < at,
                    and_(
                        sql.conversations.c.updated_at == at, sql.conversations.c.id < position["i"]
                    ),
                )
            )
        statement = statement.order_by(
            sql.conversations.c.updated_at.desc(), sql.conversations.c.id.desc()
        ).limit(n + 1)
        async with self._read():
            rows = (await self.session.execute(statement)).all()
        items = [sql.conversation_record(row) for row in rows[:n]]
        next_cursor = None
        if len(rows) > n:
            last = items[-1]
            next_cursor = encode_cursor("conversations", t=last.updated_at, i=last.id)
        return Page(items=items, next_cursor=next_cursor)


def _new_conversation(
    cid: str, uid: str, title: str | None, metadata: dict[str, Any]
) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": cid,
        "user_id": uid,
        "title": title,
        "metadata": metadata,
        "last_seq": 0,
        "created_at": now,
        "updated_at": now,
    }
