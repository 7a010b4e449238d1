"""``ConvodbChatStore``: the ``AsyncDBChatStore`` methods over ``ConversationService``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.storage.chat_store.base_db import AsyncDBChatStore, MessageStatus

from ... import (
    ConversationNotFoundError,
    ConversationService,
    Database,
    Limits,
    NewMessage,
    StoredConversation,
    StoredMessage,
    ValidationError,
)
from ..._validation import check_user_id
from .._ids import conversation_id_for
from ._mapping import (
    METADATA_KEY,
    archived,
    archived_position,
    encode_all,
    stamped,
    to_chat_message,
)

__all__ = ["ConvodbChatStore"]

_ACTIVE_NAMESPACE = "llama_index"
_ARCHIVED_NAMESPACE = "llama_index.archived"
_LIMITS = Limits()
_PAGE = _LIMITS.max_page_size
_BATCH = _LIMITS.max_batch_messages

_STATUSES = (MessageStatus.ACTIVE, MessageStatus.ARCHIVED)


class ConvodbChatStore(AsyncDBChatStore):
    """LlamaIndex's ``AsyncDBChatStore`` on a convodb :class:`~convodb.Database`, for one user.

    ```python
    store = ConvodbChatStore(database=db, user_id="alice")
    memory = Memory.from_defaults(session_id="support-42", chat_store=store, token_limit=40_000)
    await memory.aput(ChatMessage(role="user", content="Hi!"))
    ```

    Args:
        database: the convodb database (its schema created or upgraded).
        user_id: the owner of every key this store reads and writes.

    Raises:
        ValidationError: ``user_id`` is not a valid convodb user id.
    """

    user_id: str
    """The owner of the conversations behind this store's keys."""

    _database: Database = PrivateAttr()

    def __init__(self, *, database: Database, user_id: str) -> None:
        if not isinstance(database, Database):
            raise ValidationError(
                "database", f"must be a convodb Database, not {type(database).__name__}"
            )
        super().__init__(user_id=check_user_id(user_id))
        self._database = database

    @classmethod
    def class_name(cls) -> str:
        return "ConvodbChatStore"

    def conversation_id(self, key: str, status: MessageStatus = MessageStatus.ACTIVE) -> str:
        """The id of the convodb conversation that holds the key's messages of that status
        (whether or not it exists yet), e.g. to read them through convodb's own API."""
        key = _check_key(key)
        namespace = (
            _ACTIVE_NAMESPACE
            if _check_status(status) is MessageStatus.ACTIVE
            else _ARCHIVED_NAMESPACE
        )
        return conversation_id_for(namespace, self.user_id, key)

    # -- reads ---------------------------------------------------------------------------

    async def get_messages(
        self,
        key: str,
        status: MessageStatus | None = MessageStatus.ACTIVE,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[ChatMessage]:
        """The key's messages of that status (``None``: both), oldest first; ``offset`` and
        ``limit`` page through them as SQL's ``OFFSET`` and ``LIMIT`` would."""
        key = _check_key(key)
        chosen = _check_optional_status(status)
        start = _check_count("offset", offset) or 0
        size = _check_count("limit", limit)
        if size == 0:
            return []
        async with self._database.session() as session:
            service = ConversationService(session)
            if chosen is MessageStatus.ACTIVE:
                stored = await self._active_slice(service, key, start, size)
            else:
                stored = await self._ordered(service, key, both=chosen is None)
                stored = stored[start : None if size is None else start + size]
        return [to_chat_message(m) for m in stored]

    async def count_messages(
        self, key: str, status: MessageStatus | None = MessageStatus.ACTIVE
    ) -> int:
        """How many messages of that status (``None``: both) the key holds."""
        key = _check_key(key)
        chosen = _check_optional_status(status)
        async with self._database.session() as session:
            service = ConversationService(session)
            total = 0
            for each in self._statuses(chosen):
                conversation = await self._conversation(service, key, each)
                total += conversation.message_count if conversation is not None else 0
        return total

    async def get_keys(self) -> list[str]:
        """This user's keys that hold messages, most recently changed first."""
        keys: dict[str, None] = {}
        async with self._database.session() as session:
            service = ConversationService(session)
            cursor = None
            while True:
                page = await service.list_conversations(self.user_id, limit=_PAGE, cursor=cursor)
                for conversation in page.items:
                    key = self._key_of(conversation)
                    if key is not None and conversation.message_count:
                        keys[key] = None
                if page.next_cursor is None:
                    return list(keys)
                cursor = page.next_cursor

    # -- writes --------------------------------------------------------------------------

    async def add_message(
        self, key: str, message: ChatMessage, status: MessageStatus = MessageStatus.ACTIVE
    ) -> None:
        """Append one message to the key's messages of that status."""
        await self.add_messages(key, [message], status)

    async def add_messages(
        self,
        key: str,
        messages: list[ChatMessage],
        status: MessageStatus = MessageStatus.ACTIVE,
    ) -> None:
        """Append messages to the key's messages of that status, atomically (all or none)."""
        key = _check_key(key)
        chosen = _check_status(status)
        batch = encode_all(messages)
        if not batch:
            return
        cid = self.conversation_id(key, chosen)
        async with self._database.session() as session:
            if chosen is MessageStatus.ARCHIVED:
                active = await self._conversation(
                    ConversationService(session), key, MessageStatus.ACTIVE
                )
                batch = stamped(batch, after=active.last_seq if active is not None else 0)
            if len(batch) > _BATCH:  # more than one append takes: one transaction
                async with session.begin():
                    service = ConversationService(session, commit=False)
                    await self._append(service, key, chosen, batch)
                return
            # The common case, one append on an existing conversation, is one statement.
            service = ConversationService(session)
            try:
                await service.save_conversation_messages(cid, self.user_id, batch)
            except ConversationNotFoundError:
                await self._create(service, key, chosen)
                await service.save_conversation_messages(cid, self.user_id, batch)

    async def set_messages(
        self,
        key: str,
        messages: list[ChatMessage],
        status: MessageStatus = MessageStatus.ACTIVE,
    ) -> None:
        """Replace every message of the key, of both statuses, with these, of that status.

        Atomic: a concurrent reader sees the old messages or the new ones, never a mix.
        """
        key = _check_key(key)
        chosen = _check_status(status)
        batch = encode_all(messages)
        async with self._database.session() as session, session.begin():
            service = ConversationService(session, commit=False)
            for each in _STATUSES:
                try:
                    await service.clear_messages(self.conversation_id(key, each), self.user_id)
                except ConversationNotFoundError:
                    pass
            if not batch:
                return
            if chosen is MessageStatus.ARCHIVED:
                active = await self._conversation(service, key, MessageStatus.ACTIVE)
                batch = stamped(batch, after=active.last_seq if active is not None else 0)
            await self._append(service, key, chosen, batch)

    async def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete one message and return it, ``None`` when the key holds no such message.

        Args:
            key: the key.
            idx: the message's ``seq`` in the key's active conversation, or minus its ``seq``
                in the archived one (not a row id, as ``SQLAlchemyChatStore``'s is).
        """
        key = _check_key(key)
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise ValidationError("idx", f"must be an integer, not {type(idx).__name__}")
        if idx == 0:
            return None
        status = MessageStatus.ACTIVE if idx > 0 else MessageStatus.ARCHIVED
        async with self._database.session() as session:
            service = ConversationService(session)
            try:
                removed = await service.remove_messages(
                    self.conversation_id(key, status), self.user_id, seqs=[abs(idx)]
                )
            except ConversationNotFoundError:
                return None
        return to_chat_message(removed[0]) if removed else None

    async def delete_messages(self, key: str, status: MessageStatus | None = None) -> None:
        """Delete the key's messages of that status (``None``: both, atomically)."""
        key = _check_key(key)
        chosen = _check_optional_status(status)
        async with self._database.session() as session, session.begin():
            service = ConversationService(session, commit=False)
            for each in self._statuses(chosen):
                try:
                    await service.clear_messages(self.conversation_id(key, each), self.user_id)
                except ConversationNotFoundError:
                    pass

    async def delete_oldest_messages(self, key: str, n: int) -> list[ChatMessage]:
        """Delete the oldest ``n`` active messages and return them, oldest first."""
        key = _check_key(key)
        count = _check_count("n", n)
        if not count:
            return []
        async with self._database.session() as session, session.begin():
            service = ConversationService(session, commit=False)
            removed = await self._remove_oldest(service, key, count)
        return [to_chat_message(m) for m in removed]

    async def archive_oldest_messages(self, key: str, n: int) -> list[ChatMessage]:
        """Move the oldest ``n`` active messages to the archived ones and return them, oldest
        first; the removal and the append are one transaction."""
        key = _check_key(key)
        count = _check_count("n", n)
        if not count:
            return []
        async with self._database.session() as session, session.begin():
            service = ConversationService(session, commit=False)
            removed = await self._remove_oldest(service, key, count)
            if removed:
                moved = [archived(m) for m in removed]
                await self._append(service, key, MessageStatus.ARCHIVED, moved)
        return [to_chat_message(m) for m in removed]

    # -- helpers -------------------------------------------------------------------------

    def _statuses(self, status: MessageStatus | None) -> tuple[MessageStatus, ...]:
        return _STATUSES if status is None else (status,)

    def _key_of(self, conversation: StoredConversation) -> str | None:
        """The key a conversation of this user stands for, if it is one of this store's."""
        marker = conversation.metadata.get(METADATA_KEY)
        if not isinstance(marker, dict) or not isinstance(marker.get("key"), str):
            return None
        key: str = marker["key"]
        if conversation.id not in (self.conversation_id(key, s) for s in _STATUSES):
            return None
        return key

    async def _conversation(
        self, service: ConversationService, key: str, status: MessageStatus
    ) -> StoredConversation | None:
        try:
            return await service.get_conversation(self.conversation_id(key, status), self.user_id)
        except ConversationNotFoundError:
            return None

    async def _create(self, service: ConversationService, key: str, status: MessageStatus) -> None:
        await service.get_or_create_conversation(
            self.conversation_id(key, status),
            self.user_id,
            metadata={METADATA_KEY: {"key": key, "status": status.value}},
        )

    async def _append(
        self,
        service: ConversationService,
        key: str,
        status: MessageStatus,
        batch: Sequence[NewMessage],
    ) -> None:
        """Append in the caller's transaction, creating the conversation when it is missing
        (an append to a missing conversation changes nothing, so the transaction goes on)."""
        cid = self.conversation_id(key, status)
        for i in range(0, len(batch), _BATCH):
            chunk = batch[i : i + _BATCH]
            try:
                await service.save_conversation_messages(cid, self.user_id, chunk)
            except ConversationNotFoundError:
                await self._create(service, key, status)
                await service.save_conversation_messages(cid, self.user_id, chunk)

    async def _remove_oldest(
        self, service: ConversationService, key: str, count: int
    ) -> list[StoredMessage]:
        """Remove up to ``count`` of the oldest active messages, in the caller's transaction."""
        cid = self.conversation_id(key, MessageStatus.ACTIVE)
        removed: list[StoredMessage] = []
        while len(removed) < count:
            want = min(_PAGE, count - len(removed))
            try:
                chunk = await service.remove_messages(cid, self.user_id, oldest=want)
            except ConversationNotFoundError:
                return []
            removed.extend(chunk)
            if len(chunk) < want:
                break
        return removed

    async def _active_slice(
        self, service: ConversationService, key: str, start: int, size: int | None
    ) -> list[StoredMessage]:
        """Active messages ``start`` to ``start + size`` in seq order, read from whichever end
        of the conversation is nearer (the latest page is a read of the newest messages)."""
        cid = self.conversation_id(key, MessageStatus.ACTIVE)
        if start == 0:
            return await self._read(service, cid, "asc", skip=0, take=size)
        conversation = await self._conversation(service, key, MessageStatus.ACTIVE)
        if conversation is None:
            return []
        total = conversation.message_count
        end = total if size is None else min(total, start + size)
        if start >= end:
            return []
        if start <= total - end:
            return await self._read(service, cid, "asc", skip=start, take=end - start)
        newest = await self._read(service, cid, "desc", skip=total - end, take=end - start)
        return newest[::-1]

    async def _read(
        self,
        service: ConversationService,
        cid: str,
        order: Literal["asc", "desc"],
        *,
        skip: int,
        take: int | None,
    ) -> list[StoredMessage]:
        """``take`` messages (``None``: all) after skipping ``skip``, in that order, with the
        data of their parts; ``[]`` for a conversation that does not exist."""
        found: list[StoredMessage] = []
        cursor = None
        while take is None or len(found) < take:
            wanted = skip + (_PAGE if take is None else take - len(found))
            n = min(_PAGE, wanted)
            try:
                page = await service.list_messages(
                    cid,
                    self.user_id,
                    limit=n,
                    order=order,
                    cursor=cursor,
                    with_data=skip < n,  # a page skipped whole needs no attachment data
                )
            except ConversationNotFoundError:
                return []
            items = page.items
            if skip:
                dropped = min(skip, len(items))
                items, skip = items[dropped:], skip - dropped
            found.extend(items if take is None else items[: take - len(found)])
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return found

    async def _ordered(
        self, service: ConversationService, key: str, *, both: bool
    ) -> list[StoredMessage]:
        """Every archived message (and with ``both``, every active one too), in the order
        they were added."""
        active: list[StoredMessage] = []
        if both:  # active first: a message archived meanwhile is then read twice, not missed
            active = await self._read(
                service, self.conversation_id(key, MessageStatus.ACTIVE), "asc", skip=0, take=None
            )
        archived = await self._read(
            service, self.conversation_id(key, MessageStatus.ARCHIVED), "asc", skip=0, take=None
        )
        seqs = {m.seq for m in active}
        ordered = [((m.seq, 0, 0), m) for m in active]
        for m in archived:
            position = archived_position(m)
            if position[1] == 0 and position[0] in seqs:
                continue  # the copy of an active message read above
            ordered.append((position, m))
        ordered.sort(key=lambda pair: pair[0])
        return [m for _, m in ordered]


# -- arguments ---------------------------------------------------------------------------


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise ValidationError("key", f"must be a string, not {type(key).__name__}")
    return key


def _check_status(status: object) -> MessageStatus:
    try:
        return MessageStatus(status)
    except (ValueError, TypeError):
        allowed = [s.value for s in MessageStatus]
        raise ValidationError("status", f"must be one of {allowed}; got {status!r}") from None


def _check_optional_status(status: object) -> MessageStatus | None:
    """A status, or ``None`` for both."""
    return None if status is None else _check_status(status)


def _check_count(field: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"must be an integer, not {type(value).__name__}")
    if value < 0:
        raise ValidationError(field, f"must not be negative; got {value}")
    return value
