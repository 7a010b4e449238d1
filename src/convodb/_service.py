"""``ConversationService``: the one home of the store's rules.

- **Ownership** is part of every statement that reads or writes a conversation's rows
  (``WHERE id = :cid AND user_id = :uid``, or an ``EXISTS`` on it in the same statement). A
  conversation of another user is indistinguishable from a missing one.
- **Order** is ``seq``, assigned from ``conversations.last_seq`` by the append's first statement,
  ``UPDATE ... SET last_seq = last_seq + n ... RETURNING last_seq``. That row is the lock: a
  concurrent append to the same conversation waits for this one to commit, so ``seq`` values
  are gap-free, never repeat, and commit in order. A reader that has seen ``seq`` k will never
  later find a message below k appear.
- **A batch append is one transaction**: everything is validated before the first statement;
  ``updated_at`` moves in the same transaction; nothing is read back (the service already
  knows every value it wrote).
- **Idempotency**: a message may carry a ``key``; appending a key that the conversation already
  holds stores nothing and returns the stored message.

The hot path is SQLAlchemy Core on the tables and returns slotted dataclasses (see
``convodb._records``). Every write method is one transaction: with ``commit=True`` (the
default, as in the seed) the service commits it; with ``commit=False`` it joins the caller's
transaction and the caller commits or rolls back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import and_, bindparam, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ._cursor import decode_cursor, encode_cursor
from ._dialect import insert_ignoring_conflicts, translate_error
from ._ids import new_id
from ._models import conversations as _conv
from ._models import messages as _msg
from ._records import NewMessage, Page, StoredConversation, StoredMessage, ToolCall
from ._types import utcnow
from ._validation import (
    Limits,
    MessageInput,
    check_batch,
    check_conversation_id,
    check_limit,
    check_metadata,
    check_title,
    check_user_id,
)
from .errors import (
    ConversationExistsError,
    ConversationNotFoundError,
    IdempotencyKeyReuseError,
    ValidationError,
)

__all__ = ["ConversationService"]


_CONV_COLUMNS = (
    _conv.c.id,
    _conv.c.user_id,
    _conv.c.title,
    _conv.c["metadata"],
    _conv.c.last_seq,
    _conv.c.created_at,
    _conv.c.updated_at,
)
_MSG_COLUMNS = (
    _msg.c.id,
    _msg.c.conversation_id,
    _msg.c.seq,
    _msg.c.role,
    _msg.c.content,
    _msg.c.tool_calls,
    _msg.c.tool_name,
    _msg.c.tool_call_id,
    _msg.c["metadata"],
    _msg.c.key,
    _msg.c.token_count,
    _msg.c.created_at,
)

# Statements are built once; SQLAlchemy caches their compiled form.
_owned = and_(_conv.c.id == bindparam("cid"), _conv.c.user_id == bindparam("uid"))
_OWNED_EXISTS = select(literal(1)).where(_owned).exists()
_SELECT_CONVERSATION = select(*_CONV_COLUMNS).where(_owned)
_BUMP_SEQ = (
    update(_conv)
    .where(_owned)
    .values(last_seq=_conv.c.last_seq + bindparam("n"), updated_at=bindparam("now"))
    .returning(_conv.c.last_seq)
)
# A no-op write: takes the conversation's row lock (PostgreSQL) or the write lock (SQLite) and
# proves ownership, without moving anything.
_LOCK = update(_conv).where(_owned).values(last_seq=_conv.c.last_seq).returning(_conv.c.last_seq)
_LATEST = (
    select(*_MSG_COLUMNS)
    .where(_msg.c.conversation_id == bindparam("cid"), _OWNED_EXISTS)
    .order_by(_msg.c.seq.desc())
    .limit(bindparam("n"))
)
_AFTER = (
    select(*_MSG_COLUMNS)
    .where(_msg.c.conversation_id == bindparam("cid"), _msg.c.seq > bindparam("seq"), _OWNED_EXISTS)
    .order_by(_msg.c.seq.asc())
    .limit(bindparam("n"))
)
_BEFORE = (
    select(*_MSG_COLUMNS)
    .where(_msg.c.conversation_id == bindparam("cid"), _msg.c.seq < bindparam("seq"), _OWNED_EXISTS)
    .order_by(_msg.c.seq.desc())
    .limit(bindparam("n"))
)
_INSERT_MESSAGES = _msg.insert()

_UNSET: Final[Any] = object()
Order = Literal["asc", "desc"]


class ConversationService:
    """Conversations and their messages, for one session.

    ```python
    async with db.session() as session:
        service = ConversationService(session)
        conversation = await service.get_or_create_conversation(None, user_id="u1")
        await service.save_message(conversation.id, "user", "Hi!", user_id="u1")
        history = await service.get_conversation_history(conversation.id, "u1", limit=50)
    ```

    Args:
        session: an ``AsyncSession`` on a database with convodb's tables.
        limits: input limits; the defaults suit a public chat product.
        commit: commit each write method's transaction (the default, as in the seed). Pass
            ``False`` to run the writes inside your own transaction; then roll it back if a
            write raises.
    """

    def __init__(
        self, session: AsyncSession, *, limits: Limits | None = None, commit: bool = True
    ) -> None:
        self.session = session
        self.limits = limits or Limits()
        self._commit = commit

    # -- conversations --------------------------------------------------------------------

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
        return _conversation(row)

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
        return _conversation(row)

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
        return _conversation(row)

    async def update_conversation(
        self,
        conversation_id: str,
        user_id: str,
        *,
        title: str | None = _UNSET,
        metadata: Mapping[str, Any] = _UNSET,
    ) -> StoredConversation:
        """Change the title and/or replace the metadata; ``updated_at`` moves.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
            ValidationError: an argument is invalid.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        values: dict[str, Any] = {"updated_at": utcnow()}
        if title is not _UNSET:
            values["title"] = check_title(title)
        if metadata is not _UNSET:
            values["metadata"] = check_metadata("metadata", metadata, self.limits)
        statement = (
            update(_conv)
            .where(_conv.c.id == cid, _conv.c.user_id == uid)
            .values(values)
            .returning(*_CONV_COLUMNS)
        )
        async with self._write():
            row = (await self.session.execute(statement)).one_or_none()
        if row is None:
            raise ConversationNotFoundError(cid)
        return _conversation(row)

    async def delete_conversation(self, conversation_id: str, user_id: str) -> None:
        """Delete the conversation and all its messages.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        statement = _conv.delete().where(_conv.c.id == cid, _conv.c.user_id == uid)
        async with self._write():
            # Messages go with it through ON DELETE CASCADE, in the same statement.
            deleted = (await self.session.execute(statement.returning(_conv.c.id))).first()
        if deleted is None:
            raise ConversationNotFoundError(cid)

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
        statement = select(*_CONV_COLUMNS).where(_conv.c.user_id == uid)
        if cursor is not None:
            position = decode_cursor(cursor, "conversations", {"t": str, "i": str})
            try:
                at = datetime.fromisoformat(position["t"])
            except ValueError:
                raise ValidationError(
                    "cursor", "is malformed; pass back a next_cursor unchanged"
                ) from None
            statement = statement.where(
                or_(
                    _conv.c.updated_at < at,
                    and_(_conv.c.updated_at == at, _conv.c.id < position["i"]),
                )
            )
        statement = statement.order_by(_conv.c.updated_at.desc(), _conv.c.id.desc()).limit(n + 1)
        async with self._read():
            rows = (await self.session.execute(statement)).all()
        items = [_conversation(row) for row in rows[:n]]
        next_cursor = None
        if len(rows) > n:
            last = items[-1]
            next_cursor = encode_cursor("conversations", t=last.updated_at.isoformat(), i=last.id)
        return Page(items=items, next_cursor=next_cursor)

    # -- messages -------------------------------------------------------------------------

    async def save_message(
        self,
        conversation_id: str,
        role: str,
        content: str | None,
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
            content: the text; may be ``None`` only on an assistant message with tool calls.
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
    ) -> list[StoredMessage]:
        """Append messages atomically: all of them, in order, or none.

        Each message is a :class:`NewMessage` or a dict with the same keys (the seed's dicts
        work as they are). Messages whose ``key`` the conversation already holds are not
        stored again: the stored message is returned in their place.

        Returns:
            The stored messages, in the order given, with their ``seq`` and ``id``.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
            ValidationError: a message is invalid; nothing was stored.
            IdempotencyKeyReuseError: a key is stored with a different message.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        batch = check_batch(messages, self.limits)
        async with self._write():
            return await self._append(cid, uid, batch)

    async def get_conversation_history(
        self, conversation_id: str, user_id: str, limit: int = 50
    ) -> list[StoredMessage]:
        """The latest ``limit`` messages of the user's conversation, oldest first.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
            ValidationError: ``limit`` is not between 1 and ``limits.max_page_size``.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        n = check_limit(limit, self.limits)
        async with self._read():
            rows = await self._owned_rows(_LATEST, cid, uid, n=n)
        return [_message(row) for row in reversed(rows)]

    async def list_messages(
        self,
        conversation_id: str,
        user_id: str,
        *,
        limit: int = 100,
        order: Order = "asc",
        cursor: str | None = None,
        after_seq: int | None = None,
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
            if not isinstance(after_seq, int) or isinstance(after_seq, bool) or after_seq < 0:
                raise ValidationError("after_seq", f"must be an integer >= 0; got {after_seq!r}")
            seq = after_seq
        elif cursor is not None:
            position = decode_cursor(cursor, f"messages-{order}", {"s": int})
            seq = position["s"]
        else:
            seq = 0 if order == "asc" else 2**62
        statement = _AFTER if order == "asc" else _BEFORE
        async with self._read():
            rows = await self._owned_rows(statement, cid, uid, n=n + 1, seq=seq)
        items = [_message(row) for row in rows[:n]]
        next_cursor = None
        if len(rows) > n:
            next_cursor = encode_cursor(f"messages-{order}", s=items[-1].seq)
        return Page(items=items, next_cursor=next_cursor)

    # -- internals ------------------------------------------------------------------------

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[None]:
        """One write transaction: committed here in ``commit`` mode, driver errors translated."""
        try:
            yield
            if self._commit:
                await self.session.commit()
        except BaseException as exc:
            if self._commit:
                await self.session.rollback()
            translated = translate_error(exc)
            if translated is not None:
                raise translated from exc
            raise

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[None]:
        try:
            yield
        except Exception as exc:
            translated = translate_error(exc)
            if translated is not None:
                raise translated from exc
            raise

    async def _select_conversation(self, cid: str, uid: str) -> Sequence[Any] | None:
        result = await self.session.execute(_SELECT_CONVERSATION, {"cid": cid, "uid": uid})
        return result.one_or_none()

    async def _insert_conversation(self, values: dict[str, Any]) -> Sequence[Any] | None:
        dialect = self.session.get_bind().dialect.name
        statement = (
            insert_ignoring_conflicts(_conv, dialect).values(values).returning(*_CONV_COLUMNS)
        )
        return (await self.session.execute(statement)).one_or_none()

    async def _owned_rows(
        self, statement: Any, cid: str, uid: str, **params: Any
    ) -> Sequence[Sequence[Any]]:
        """Rows of the user's conversation; ownership is checked by the same statement.

        No rows means an empty page or not the user's conversation; only then a second,
        conversation-only query tells which.
        """
        rows = (await self.session.execute(statement, {"cid": cid, "uid": uid, **params})).all()
        if not rows and await self._select_conversation(cid, uid) is None:
            raise ConversationNotFoundError(cid)
        return rows

    async def _append(self, cid: str, uid: str, batch: list[MessageInput]) -> list[StoredMessage]:
        now = utcnow()
        params = {"cid": cid, "uid": uid, "now": now}
        if not batch:
            if await self._select_conversation(cid, uid) is None:
                raise ConversationNotFoundError(cid)
            return []
        keys = [m.key for m in batch if m.key is not None]
        if not keys:
            last_seq = await self._bump(_BUMP_SEQ, {**params, "n": len(batch)})
            return await self._insert(cid, batch, last_seq, now)

        # Keyed batch: lock the conversation (and prove ownership) before looking keys up,
        # so that a concurrent retry of the same batch waits here and then finds the keys.
        last_seq = await self._bump(_LOCK, params)
        result = await self.session.execute(
            select(*_MSG_COLUMNS).where(_msg.c.conversation_id == cid, _msg.c.key.in_(keys))
        )
        stored = {m.key: m for m in map(_message, result)}
        fresh = [m for m in batch if m.key is None or m.key not in stored]
        for m in batch:
            if m.key is not None and m.key in stored and not _same_message(m, stored[m.key]):
                raise IdempotencyKeyReuseError(m.key)
        if fresh:
            last_seq = await self._bump(_BUMP_SEQ, {**params, "n": len(fresh)})
        inserted = iter(await self._insert(cid, fresh, last_seq, now))
        return [
            stored[m.key] if m.key is not None and m.key in stored else next(inserted)
            for m in batch
        ]

    async def _bump(self, statement: Any, params: dict[str, Any]) -> int:
        """Run ``_BUMP_SEQ`` (reserve ``n`` seqs) or ``_LOCK``; returns ``last_seq``.

        Either statement locks the conversation until the transaction ends and proves the
        user owns it: no row means missing or foreign.
        """
        last_seq = (await self.session.execute(statement, params)).scalar_one_or_none()
        if last_seq is None:
            raise ConversationNotFoundError(params["cid"])
        return int(last_seq)

    async def _insert(
        self, cid: str, batch: list[MessageInput], last_seq: int, now: datetime
    ) -> list[StoredMessage]:
        if not batch:
            return []
        first = last_seq - len(batch) + 1
        records = [
            StoredMessage(
                new_id(),
                cid,
                first + i,
                m.role,  # type: ignore[arg-type]
                m.content,
                tuple(ToolCall(**c) for c in m.tool_calls) if m.tool_calls else None,
                m.tool_name,
                m.tool_call_id,
                m.metadata,
                m.key,
                None,
                now,
            )
            for i, m in enumerate(batch)
        ]
        rows = [
            {
                "id": r.id,
                "conversation_id": cid,
                "seq": r.seq,
                "role": m.role,
                "content": m.content,
                "tool_calls": m.tool_calls,
                "tool_name": m.tool_name,
                "tool_call_id": m.tool_call_id,
                "metadata": m.metadata,
                "key": m.key,
                "token_count": None,
                "created_at": now,
            }
            for r, m in zip(records, batch, strict=True)
        ]
        await self.session.execute(_INSERT_MESSAGES, rows)
        return records


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


def _conversation(row: Sequence[Any]) -> StoredConversation:
    return StoredConversation(*row)


def _message(row: Sequence[Any]) -> StoredMessage:
    (
        id_,
        cid,
        seq,
        role,
        content,
        tool_calls,
        tool_name,
        tool_call_id,
        metadata,
        key,
        tokens,
        at,
    ) = row
    return StoredMessage(
        id_,
        cid,
        seq,
        role,
        content,
        tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in tool_calls)
        if tool_calls
        else None,
        tool_name,
        tool_call_id,
        metadata,
        key,
        tokens,
        at,
    )


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
