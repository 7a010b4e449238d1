"""``ConvodbSession``: the Agents SDK's ``Session`` protocol on a convodb database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from agents.memory import SessionSettings
from agents.memory.session_settings import coerce_session_settings, resolve_session_limit
from sqlalchemy.ext.asyncio import AsyncSession

from ..._db import Database
from ..._records import StoredMessage
from ..._service import ConversationService
from ..._validation import Limits, check_metadata, check_text, check_user_id
from ...errors import ConversationNotFoundError, ValidationError
from .._ids import conversation_id_for
from ._items import to_messages
from ._layout import KEY, Layout, layout

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

__all__ = ["ConvodbSession"]

_NAMESPACE = "openai_agents"


class ConvodbSession:
    """An Agents SDK session stored in convodb: ``Runner.run(..., session=...)`` keeps the
    conversation in your database, where convodb's windows, formats, export and HTTP API read
    it too.

    ```python
    db = convodb.Database("sqlite:///chat.db")
    await db.create_all()
    session = ConvodbSession("support-42", database=db, user_id="alice")
    result = await Runner.run(agent, "Hi!", session=session)
    ```

    The session is the user's conversation ``session_id``: two users' sessions of the same id
    are two conversations, and one never reads the other's. Every item the SDK adds comes
    back from :meth:`get_items` and :meth:`pop_item` exactly as it was added (equal JSON),
    with one exception on PostgreSQL, whose JSONB normalises numbers: an item convodb keeps
    only verbatim (an OpenAI ``provider_item`` part: hosted tool calls, MCP, items convodb has
    no neutral form for) comes back with its numbers as JSONB gives them: a whole number
    written as a float (``1e16``) as an integer (``10000000000000000``), ``-0.0`` as ``0.0``.
    SQLite and MariaDB keep them as written, and numbers anywhere else in an item come back
    exactly on every database.
    The conversation is created by the first :meth:`add_items` that has items; reading,
    popping or clearing a session that has none creates nothing.

    Each call opens its own database session and transaction; instances hold no connection
    and may be created per request.

    Args:
        session_id: the SDK's session id, any string.
        database: the convodb database.
        user_id: the owner of the conversation.
        session_settings: the SDK's settings: ``limit`` is the number of items
            :meth:`get_items` returns when called without one. A dict is accepted as the SDK
            accepts one.
        limits: convodb's input limits for the messages the items are stored as; the
            service's defaults otherwise.

    Raises:
        ValidationError: ``session_id`` or ``user_id`` is not a string convodb stores (a
            ``LimitExceededError`` for a ``session_id`` too long for the conversation's
            metadata, which holds it: ``limits.max_metadata_bytes``, 64 KiB by default).
    """

    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        *,
        database: Database,
        user_id: str,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._limits = limits or Limits()
        self.session_id = _check_session_id(session_id, self._limits)
        self.user_id = check_user_id(user_id)
        self.conversation_id = conversation_id_for(_NAMESPACE, self.user_id, self.session_id)
        """The convodb conversation that holds the session's items."""
        self.session_settings = (
            coerce_session_settings(session_settings)
            if session_settings is not None
            else SessionSettings()
        )
        self._database = database

    def _service(self, session: AsyncSession, *, commit: bool = True) -> ConversationService:
        return ConversationService(session, limits=self._limits, commit=commit)

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The session's items, oldest first: all, or the newest ``limit``.

        ``limit`` (or, when it is ``None``, ``session_settings.limit``) works as in the SDK's
        ``SQLiteSession``: ``None`` or a negative number returns every item, ``0`` none. A
        limit counts items, not messages: the newest ``limit`` items may begin inside a
        message and separate a function call from its output.

        Raises:
            ValidationError: the limit is not an integer (a ``bool`` is none; where
                ``SQLiteSession`` raises a ``TypeError`` for a string, or reads ``True`` as 1).
        """
        n = resolve_session_limit(limit, self.session_settings)
        if n is not None and (not isinstance(n, int) or isinstance(n, bool)):
            field = "limit" if limit is not None else "session_settings.limit"
            raise ValidationError(field, f"must be an integer or None, not {type(n).__name__}")
        if n == 0:
            return []
        async with self._database.session() as session:
            service = self._service(session)
            try:
                if n is None or n < 0:
                    layouts = [layout(m) for m in await self._all(service)]
                else:
                    layouts = await self._newest(service, n)
            except ConversationNotFoundError:
                return []
        items = [shape.item(i) for shape in layouts for i in shape.held]
        if n is not None and 0 < n < len(items):
            items = items[len(items) - n :]
        return cast("list[TResponseInputItem]", items)

    async def _all(self, service: ConversationService) -> list[StoredMessage]:
        messages: list[StoredMessage] = []
        cursor: str | None = None
        while True:
            page = await service.list_messages(
                self.conversation_id,
                self.user_id,
                limit=service.limits.max_page_size,
                cursor=cursor,
                with_data=True,
            )
            messages.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                return messages

    async def _newest(self, service: ConversationService, n: int) -> list[Layout]:
        """The newest messages that hold at least ``n`` items (all, when fewer), oldest first.

        Read newest first, a page at a time: a message holds one item or more, so the first
        page of ``n`` messages is almost always the last.
        """
        newest_first: list[Layout] = []
        held = 0
        cursor: str | None = None
        while held < n:
            page = await service.list_messages(
                self.conversation_id,
                self.user_id,
                limit=min(n - held, service.limits.max_page_size),
                order="desc",
                cursor=cursor,
                with_data=True,
            )
            for message in page.items:
                newest_first.append(layout(message))
                held += len(newest_first[-1].held)
            cursor = page.next_cursor
            if cursor is None:
                break
        newest_first.reverse()
        return newest_first

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append items, in one transaction; the first items create the conversation.

        Raises:
            ValidationError: an item is not a JSON object, or holds what convodb cannot store
                even verbatim (NUL characters, more than ``limits`` allow); nothing is stored.
        """
        if not items:
            return
        async with self._database.session() as session:
            # Most items are stored in their neutral form as they are: skip checking them
            # twice (here and in the service), and check here only when the service refused.
            messages = to_messages(cast("Sequence[Any]", items), self._limits, checked=False)
            if len(messages) <= self._limits.max_batch_messages:
                service = self._service(session)
                try:
                    await self._append(service, messages)
                except ValidationError:  # raised before anything was written
                    pass
                else:
                    return
            messages = to_messages(cast("Sequence[Any]", items), self._limits)
            if len(messages) <= self._limits.max_batch_messages:
                await self._append(self._service(session), messages)
                return
            async with session.begin():  # more messages than one append takes
                service = self._service(session, commit=False)
                await self._create(service)
                size = self._limits.max_batch_messages
                for start in range(0, len(messages), size):
                    await service.save_conversation_messages(
                        self.conversation_id, self.user_id, messages[start : start + size]
                    )

    async def _append(self, service: ConversationService, messages: list[dict[str, Any]]) -> None:
        """One append in the service's own transaction; the first creates the conversation."""
        try:
            await service.save_conversation_messages(self.conversation_id, self.user_id, messages)
        except ConversationNotFoundError:  # nothing was written
            await self._create(service)
            await service.save_conversation_messages(self.conversation_id, self.user_id, messages)

    async def _create(self, service: ConversationService) -> None:
        await service.get_or_create_conversation(
            self.conversation_id, self.user_id, metadata=_metadata(self.session_id)
        )

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove the newest item and return it; ``None`` when the session has none.

        Concurrent calls return different items. When the newest message holds several
        items, it is replaced by the same message without its last item, in the same
        transaction. A message that holds no SDK item (written through convodb, e.g. only
        Anthropic thinking) is removed on the way to the newest item.
        """
        async with self._database.session() as session, session.begin():
            service = self._service(session, commit=False)
            while True:
                try:
                    removed = await service.remove_messages(
                        self.conversation_id, self.user_id, newest=1
                    )
                except ConversationNotFoundError:
                    return None
                if not removed:
                    return None
                shape = layout(removed[0])
                if not shape.held:
                    continue
                item = shape.item(shape.held[-1])
                rest = shape.without(shape.held[-1])
                if rest is not None:
                    await service.save_conversation_messages(
                        self.conversation_id, self.user_id, [rest]
                    )
                return cast("TResponseInputItem", item)

    async def clear_session(self) -> None:
        """Remove every item; the (empty) conversation stays, with its id and metadata."""
        async with self._database.session() as session:
            try:
                await self._service(session).clear_messages(self.conversation_id, self.user_id)
            except ConversationNotFoundError:
                pass


def _metadata(session_id: str) -> dict[str, Any]:
    """The conversation's metadata: the adapter's key holds the session id."""
    return {KEY: {"session_id": session_id}}


def _check_session_id(session_id: object, limits: Limits) -> str:
    """A session id convodb stores: a string that fits the conversation's metadata."""
    value = check_text("session_id", session_id)
    try:
        check_metadata("metadata", _metadata(value), limits)
    except ValidationError as exc:
        reason = str(exc).removeprefix(f"{exc.field}: ")
        message = f"does not fit the conversation's metadata, which holds it: {reason}"
        raise type(exc)("session_id", message, limit=exc.limit) from None
    return value
