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

import base64
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from . import _statements as sql
from ._cursor import decode_cursor, encode_cursor
from ._db import owns_transaction, read_transaction, write_transaction
from ._ids import new_id, new_ids
from ._message_input import MessageInput, check_batch, check_user_message
from ._parts import AudioPart, FilePart, ImagePart, Part
from ._records import (
    NewMessage,
    Page,
    StoredAttachment,
    StoredConversation,
    StoredMessage,
    StoredSummary,
    ToolCall,
    Turn,
)
from ._types import utcnow
from ._validation import (
    BATCH_KEY_PREFIX,
    MAX_SEQ,
    Limits,
    check_budget,
    check_conversation_id,
    check_digest,
    check_idempotency_key,
    check_limit,
    check_metadata,
    check_prompt_text,
    check_seq,
    check_title,
    check_user_id,
)
from .errors import (
    ConflictError,
    ConversationExistsError,
    ConversationNotFoundError,
    IdempotencyKeyReuseError,
    ValidationError,
)
from .formats import FORMATS
from .history import AgentInput, Window, WindowBuilder, compaction_cut
from .storage import Backend, backend_for
from .tokens import TokenCounter, default_counter

__all__ = ["ConversationService"]

Summarizer = Callable[[list[StoredMessage]], Awaitable[str]]
_NO_SEQ = MAX_SEQ + 1  # above any seq: "from the newest message"


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
        token_counter: counts each message's tokens once, when it is stored, for token-budget
            windows; :func:`convodb.default_counter` by default.
    """

    def __init__(
        self,
        session: AsyncSession,
        *,
        limits: Limits | None = None,
        commit: bool = True,
        token_counter: TokenCounter | None = None,
    ) -> None:
        self.session = session
        self.limits = limits or Limits()
        self.token_counter = token_counter if token_counter is not None else _process_counter()
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
            # Explicit, not only ON DELETE CASCADE: a SQLite connection that convodb did not
            # set up has foreign keys off, and orphans would reappear under a reused id.
            for table in (sql.messages, sql.summaries, sql.attachments):
                await self.session.execute(table.delete().where(table.c.conversation_id == cid))
            await self.session.execute(
                sql.conversations.delete().where(sql.conversations.c.id == cid)
            )

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

    # -- messages -------------------------------------------------------------------------

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
        async with self._write():
            return await self._append(cid, uid, batch, idempotency_key, own=own)

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
        async with self._read() as own:
            rows = await self._owned_rows(sql.LATEST, cid, uid, own=own, n=n)
        return [sql.message_record(row) for row in reversed(rows)]

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
            seq = check_seq("after_seq", after_seq)
        elif cursor is not None:
            position = decode_cursor(cursor, f"messages-{order}", {"s": int})
            seq = position["s"]
        else:
            seq = 0 if order == "asc" else _NO_SEQ
        statement = sql.AFTER if order == "asc" else sql.BEFORE
        async with self._read() as own:
            rows = await self._owned_rows(statement, cid, uid, own=own, n=n + 1, seq=seq, floor=0)
        items = [sql.message_record(row) for row in rows[:n]]
        next_cursor = None
        if len(rows) > n:
            next_cursor = encode_cursor(f"messages-{order}", s=items[-1].seq)
        return Page(items=items, next_cursor=next_cursor)

    # -- agent input and compaction -------------------------------------------------------

    async def get_agent_input(
        self,
        conversation_id: str,
        user_id: str,
        *,
        system_prompt: str | None = None,
        user_message: str | Sequence[Part | Mapping[str, Any]] | None = None,
        max_messages: int | None = None,
        max_tokens: int | None = None,
        format: str = "openai-chat",
    ) -> AgentInput:
        """The next model request's input: the newest history that fits, in an API's shape.

        The window is [system prompt, newest summary, the newest messages after it that fit
        ``max_messages`` and ``max_tokens``, ``user_message``]. Tool-call groups are kept
        whole; a window never starts with a tool result (see :mod:`convodb.history`). Only
        the rows the window needs are read: newest first, in pages, using the token counts
        stored with each message.

        Args:
            conversation_id: the conversation.
            user_id: the owner.
            system_prompt: sent first, always (Anthropic: as ``system``).
            user_message: the new user turn, sent last, always; not stored by this call. Text,
                or a list of parts (records or dicts), validated like a stored message's.
            max_messages: at most this many history messages.
            max_tokens: at most this many tokens in the whole window, fixed parts included.
            format: ``"openai-chat"``, ``"openai-responses"``, ``"anthropic"`` or ``"plain"``.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
            ContextBudgetError: system prompt, summary and user message alone exceed
                ``max_tokens``.
            ValidationError: an argument is invalid.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        if format not in FORMATS:
            raise ValidationError("format", f"must be one of {list(FORMATS)}; got {format!r}")
        budget_messages = check_budget(
            "max_messages", max_messages, self.limits.max_window_messages
        )
        budget_tokens = check_budget("max_tokens", max_tokens, self.limits.max_window_tokens)
        system_prompt = check_prompt_text("system_prompt", system_prompt, self.limits)
        new_message = check_user_message(user_message, self.limits)
        page = _first_page(budget_messages, budget_tokens)
        async with self._read() as own:
            backend, params = self._backend, {"cid": cid, "uid": uid, "n": page}
            rows = await backend.rows(self.session, sql.WINDOW_START, params, own=own)
            if rows:  # the common case: one statement found the head and the first page
                last_seq, floor = int(rows[0][-2]), int(rows[0][-1])
                summary = None
                if floor:
                    params = {"cid": cid, "uid": uid, "floor": floor}
                    found = await backend.rows(self.session, sql.SUMMARY_AT, params, own=own)
                    summary = found[0][0] if found else None
            else:  # missing, not the user's, or nothing after the summary
                last_seq, floor, summary = await self._head(cid, uid, own=own)
            builder = WindowBuilder(
                max_messages=budget_messages,
                max_tokens=budget_tokens,
                system_prompt=system_prompt,
                summary=summary,
                user_message=new_message,
                counter=self.token_counter,
            )
            read = read_tokens = 0
            while rows:
                builder.feed(map(sql.message_record, rows))
                if len(rows) < page or not builder.needs_more or rows[-1][2] - 1 <= floor:
                    break
                read += len(rows)
                read_tokens += sum(row[10] or 0 for row in rows)
                page = _next_page(builder, read, read_tokens, page, self.limits.max_page_size)
                params = {"cid": cid, "uid": uid, "seq": rows[-1][2], "floor": floor, "n": page}
                rows = await backend.rows(self.session, sql.BEFORE, params, own=own)
            window = builder.finish(total=last_seq - floor)
            if any(_stored_data(m) for m in window.messages):
                window = await self._load_attachments(window, cid, uid)
        return AgentInput.from_window(window, format)

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

    async def compact(
        self,
        conversation_id: str,
        user_id: str,
        summarize: Summarizer,
        *,
        keep_last: int = 20,
    ) -> StoredSummary | None:
        """Summarize all but the newest ``keep_last`` messages; windows then start from it.

        ``summarize`` receives the messages to cover, oldest first; when an earlier summary
        exists, the first item is a ``system`` message holding its text (``seq`` 0, metadata
        ``{"summary_upto_seq": n}``), so the new summary can extend it. The cut never splits a
        tool call from its results. The messages are kept: the transcript stays complete.
        No transaction is held while ``summarize`` runs.

        Returns:
            The new summary, or ``None`` when there is nothing new to summarize.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
            ConflictError: another compaction stored a summary as far or further meanwhile.
            ValidationError: ``keep_last`` or the summary text is invalid.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        keep_last = check_seq("keep_last", keep_last)
        async with self._read() as own:
            last_seq, floor, previous = await self._head(cid, uid, own=own)
            if last_seq - keep_last <= floor:
                return None
            messages: list[StoredMessage] = []
            while not messages or messages[-1].seq < last_seq:
                params = {"cid": cid, "uid": uid, "n": self.limits.max_page_size}
                params["seq"] = messages[-1].seq if messages else floor
                rows = (await self.session.execute(sql.AFTER, params)).all()
                if not rows:
                    break
                messages.extend(map(sql.message_record, rows))
        if self._commit and self.session.in_transaction():
            await self.session.commit()  # hold nothing while the summarizer (an LLM) runs
        cut = compaction_cut(messages, last_seq - keep_last)
        covered = [m for m in messages if m.seq <= cut]
        if not covered:
            return None
        if previous is not None:
            covered.insert(0, _previous_summary(cid, floor, previous))
        text = await summarize(covered)
        return await self.save_summary(cid, uid, text, upto_seq=cut)

    async def save_summary(
        self,
        conversation_id: str,
        user_id: str,
        content: str,
        *,
        upto_seq: int,
        metadata: Mapping[str, Any] | None = None,
    ) -> StoredSummary:
        """Store a summary of messages ``1..upto_seq``; windows then start from it.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
            ConflictError: a summary as far or further exists already.
            ValidationError: ``upto_seq`` is beyond the last message, or the text is invalid.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        text = check_prompt_text("content", content, self.limits)
        if not text:
            raise ValidationError("content", "must not be empty")
        upto_seq = check_seq("upto_seq", upto_seq, lowest=1)
        meta = check_metadata("metadata", metadata, self.limits)
        values: dict[str, Any] = {
            "id": new_id(),
            "conversation_id": cid,
            "upto_seq": upto_seq,
            "content": text,
            "token_count": self.token_counter.count_message(Turn("system", text)),
            "metadata": meta,
            "created_at": utcnow(),
        }
        async with self._write():
            last_seq = await self._lock(cid, uid)
            if upto_seq > last_seq:
                raise ValidationError(
                    "upto_seq", f"must be at most the last seq, {last_seq}; got {upto_seq}"
                )
            newest = (
                await self.session.execute(sql.LATEST_SUMMARY, {"cid": cid, "uid": uid})
            ).first()
            if newest is not None and newest[2] >= upto_seq:
                raise ConflictError(
                    f"a summary up to seq {newest[2]} exists; a new one must cover more"
                )
            await self.session.execute(sql.INSERT_SUMMARY, values)
        return StoredSummary(**values)

    async def get_summary(self, conversation_id: str, user_id: str) -> StoredSummary | None:
        """The newest summary of the user's conversation, or ``None``.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        async with self._read() as own:
            rows = await self._owned_rows(sql.LATEST_SUMMARY, cid, uid, own=own)
        return sql.summary_record(rows[0]) if rows else None

    # -- internals ------------------------------------------------------------------------

    async def _load_attachments(self, window: Window, cid: str, uid: str) -> Window:
        """The window with the binary data of its messages' parts loaded."""
        digests = sorted({d for m in window.messages for d in _stored_data(m)})
        params = {"cid": cid, "uid": uid, "digests": digests}
        found = dict((await self.session.execute(sql.ATTACHMENT_DATA, params)).all())
        encoded = {d: base64.b64encode(data).decode("ascii") for d, data in found.items()}
        messages = [
            replace(m, content=tuple(_with_data(p, encoded) for p in m.content))
            if isinstance(m.content, tuple) and _stored_data(m)
            else m
            for m in window.messages
        ]
        return replace(window, messages=messages)

    async def _lock(self, cid: str, uid: str) -> int:
        """Lock the user's conversation until the transaction ends; returns its ``last_seq``."""
        last_seq = await self._backend.lock(self.session, cid, uid)
        if last_seq is None:
            raise ConversationNotFoundError(cid)
        return last_seq

    async def _head(self, cid: str, uid: str, *, own: bool) -> tuple[int, int, str | None]:
        """``(last_seq, newest summary's upto_seq or 0, its text)`` of the user's conversation."""
        params = {"cid": cid, "uid": uid}
        rows = await self._backend.rows(self.session, sql.HEAD, params, own=own)
        if not rows:
            raise ConversationNotFoundError(cid)
        last_seq, upto_seq, text = rows[0][:3]
        return int(last_seq), int(upto_seq or 0), text

    def _write(self) -> AbstractAsyncContextManager[None]:
        return write_transaction(self.session, commit=self._commit)

    def _read(self) -> AbstractAsyncContextManager[bool]:
        return read_transaction(self.session, commit=self._commit)

    def _owns(self) -> bool:
        return owns_transaction(self.session, commit=self._commit)

    @property
    def _backend(self) -> Backend:
        return backend_for(self.session)

    async def _select_conversation(self, cid: str, uid: str) -> Sequence[Any] | None:
        result = await self.session.execute(sql.SELECT_CONVERSATION, {"cid": cid, "uid": uid})
        return result.one_or_none()

    async def _insert_conversation(self, values: dict[str, Any]) -> Sequence[Any] | None:
        return await self._backend.insert_conversation(self.session, values)

    async def _owned_rows(
        self, statement: Any, cid: str, uid: str, *, own: bool, **params: Any
    ) -> Sequence[Sequence[Any]]:
        """Rows of the user's conversation; ownership is checked by the same statement.

        No rows means an empty page or not the user's conversation; only then a second,
        conversation-only query tells which.
        """
        params = {"cid": cid, "uid": uid, **params}
        rows = await self._backend.rows(self.session, statement, params, own=own)
        if not rows and await self._select_conversation(cid, uid) is None:
            raise ConversationNotFoundError(cid)
        return rows

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
        if not batch:
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
            raise ConversationNotFoundError(cid)
        first = last_seq - len(rows) + 1
        return [
            StoredMessage(
                r["id"],
                cid,
                first + i,
                m.role,  # type: ignore[arg-type]
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


@functools.cache
def _process_counter() -> TokenCounter:
    """:func:`default_counter`, resolved once per process rather than once per service (a
    service per request): it looks at the disk, and on first use hashes tiktoken's file."""
    return default_counter()


def _first_page(max_messages: int | None, max_tokens: int | None) -> int:
    """Rows to read first for a window: enough for most windows in one statement."""
    if max_messages is not None:
        # Slack for the tool results and orphans a window skips.
        return min(max_messages + 16, 1000)
    if max_tokens is not None:
        return max(32, min(max_tokens // 48, 1000))  # ~48 tokens per message is typical chat
    return 200


def _next_page(builder: WindowBuilder, read: int, read_tokens: int, page: int, cap: int) -> int:
    """Rows to read next for a window: what the rest of the token budget needs at the rate
    seen so far, with slack (else twice the last page), at least 16 rows."""
    wanted = page * 2
    if (tokens_left := builder.tokens_left) is not None and read_tokens > 0:
        wanted = int(tokens_left * read / read_tokens * 1.25) + 16
    if (messages_left := builder.messages_left) is not None:
        wanted = min(wanted, messages_left + 16)
    return max(16, min(wanted, cap))


def _previous_summary(cid: str, upto_seq: int, text: str) -> StoredMessage:
    """The earlier summary, as the first message handed to a summarizer."""
    return StoredMessage(
        id=f"summary-{upto_seq}",
        conversation_id=cid,
        seq=0,
        role="system",
        content=text,
        tool_calls=None,
        tool_name=None,
        tool_call_id=None,
        metadata={"summary_upto_seq": upto_seq},
        key=None,
        token_count=None,
        created_at=utcnow(),
    )


def _stored_data(message: StoredMessage) -> list[str]:
    """Digests of the message's parts whose data is stored apart and not loaded."""
    if not isinstance(message.content, tuple):
        return []
    return [
        p.attachment
        for p in message.content
        if isinstance(p, ImagePart | FilePart | AudioPart)
        and p.attachment is not None
        and p.data is None
    ]


def _with_data(part: Part, encoded: dict[str, str]) -> Part:
    """The part with its attachment's data (base64), when it has one that was found."""
    if isinstance(part, ImagePart | FilePart | AudioPart) and part.attachment in encoded:
        return replace(part, data=encoded[part.attachment])
    return part


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
