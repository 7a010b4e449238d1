"""``ConversationService``'s agent input and summaries: the window for the next model request,
read newest first in pages, compaction into summaries, and the summaries themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from .. import _statements as sql
from .._cursor import decode_cursor, encode_cursor
from .._ids import new_id
from .._message_input import check_user_message
from .._parts import Part
from .._records import Page, StoredMessage, StoredSummary, Turn
from .._types import utcnow
from .._validation import (
    check_budget,
    check_conversation_id,
    check_limit,
    check_metadata,
    check_prompt_text,
    check_seq,
    check_user_id,
)
from ..errors import ConflictError, ValidationError
from ..formats import FORMATS
from ..history import AgentInput, WindowBuilder, compaction_cut
from ._base import NO_SEQ, ServiceBase

__all__ = ["Summarizer", "WindowMethods"]

Summarizer = Callable[[list[StoredMessage]], Awaitable[str]]


class WindowMethods(ServiceBase):
    """:class:`convodb.ConversationService`'s agent-input and summary methods."""

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
        async with self._read(keyed=True) as own:
            backend, params = self._backend, {"cid": cid, "uid": uid, "n": page}
            start = sql.WINDOW_START
            if self.api_key_id is not None:  # the first statement checks the key
                start, params["key"] = sql.keyed(start), self.api_key_id
            rows = await backend.rows(self.session, start, params, own=own)
            if rows:  # the common case: one statement found the head and the first page
                last_seq, removed, floor = (int(v) for v in rows[0][-3:])
                summary = None
                if floor:
                    params = {"cid": cid, "uid": uid, "floor": floor}
                    found = await backend.rows(self.session, sql.SUMMARY_AT, params, own=own)
                    summary = found[0][0] if found else None
            else:  # missing, not the user's, nothing after the summary, or a revoked key
                await self._check_key(own=own)
                last_seq, floor, summary, removed = await self._head(cid, uid, own=own)
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
            total = await self._held_after(
                cid, uid, floor, last_seq=last_seq, removed=removed, own=own
            )
            window = builder.finish(total=total)
            messages = await self._with_attachment_data(window.messages, cid, uid)
            if messages is not window.messages:
                window = replace(window, messages=messages)
        return AgentInput.from_window(window, format)

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
            last_seq, floor, previous, _removed = await self._head(cid, uid, own=own)
            if last_seq - keep_last <= floor:  # at most keep_last messages after the floor
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
        if len(messages) <= keep_last:  # removals left no more than keep_last
            return None
        # Everything up to the (keep_last + 1)-th newest message; with no gaps in seq, that is
        # last_seq - keep_last.
        cut = compaction_cut(messages, messages[-keep_last - 1].seq)
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
        async with self._read(keyed=True) as own:
            rows = await self._owned_rows(sql.LATEST_SUMMARY, cid, uid, own=own)
        return sql.summary_record(rows[0]) if rows else None

    async def list_summaries(
        self, conversation_id: str, user_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[StoredSummary]:
        """All summaries of the user's conversation, newest (highest ``upto_seq``) first, one
        page at a time. The newest is the one agent input starts from; earlier ones stay
        stored as they were.

        Args:
            conversation_id: the conversation.
            user_id: the owner.
            limit: page size, 1 to ``limits.max_page_size``.
            cursor: ``next_cursor`` of the previous page.

        Raises:
            ConversationNotFoundError: it does not exist or belongs to another user.
            ValidationError: ``limit`` or ``cursor`` is invalid.
        """
        cid, uid = check_conversation_id(conversation_id), check_user_id(user_id)
        n = check_limit(limit, self.limits)
        below = NO_SEQ
        if cursor is not None:
            below = decode_cursor(cursor, "summaries", {"s": int})["s"]
        async with self._read(keyed=True) as own:
            rows = await self._owned_rows(
                sql.SUMMARIES_BEFORE, cid, uid, own=own, n=n + 1, seq=below
            )
        items = [sql.summary_record(row) for row in rows[:n]]
        next_cursor = None
        if len(rows) > n:
            next_cursor = encode_cursor("summaries", s=items[-1].upto_seq)
        return Page(items=items, next_cursor=next_cursor)


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
