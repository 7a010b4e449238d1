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
from ..._validation import check_metadata, check_user_id
from .._ids import conversation_id_for
from ._mapping import (
    METADATA_KEY,
    archived,
    archived_positions,
    encode_all,
    renamed,
    shifted,
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
_ARCHIVED = (MessageStatus.ARCHIVED,)


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
        end = None if size is None else start + size
        if chosen is MessageStatus.ACTIVE:  # one conversation: no lock
            async with self._database.session() as session:
                service = ConversationService(session)
                stored = await self._active_slice(service, key, start, end)
            return [to_chat_message(m) for m in stored]
        # Archived messages (and both): under the active conversation's lock, which every
        # write that changes the archived one takes first, so what is read is one state.
        async with self._database.session() as session, session.begin():
            service = ConversationService(session, commit=False)
            held = await self._locked(service, key)
            if held is None:
                return []
            stored = await self._page(service, key, held, start, end, chosen)
        return [to_chat_message(m) for m in stored]

    async def count_messages(
        self, key: str, status: MessageStatus | None = MessageStatus.ACTIVE
    ) -> int:
        """How many messages of that status (``None``: both) the key holds."""
        key = _check_key(key)
        chosen = _check_optional_status(status)
        if chosen is not None:
            async with self._database.session() as session:
                conversation = await self._conversation(ConversationService(session), key, chosen)
            return conversation.message_count if conversation is not None else 0
        async with self._database.session() as session, session.begin():
            held = await self._locked(ConversationService(session, commit=False), key)
        return 0 if held is None else sum(c.message_count for c in held if c is not None)

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
                async with session.begin():
                    service = ConversationService(session, commit=False)
                    active = await self._lock_active(service, key, create=True)
                    assert active is not None
                    batch = stamped(batch, after=active.last_seq)
                    await self._append(service, key, chosen, batch)
                    await self._mark(service, key, direct=True)
                return
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
            active = await self._lock_active(service, key, create=bool(batch))
            await self._clear(service, key, _STATUSES if active is not None else _ARCHIVED)
            direct = bool(batch) and chosen is MessageStatus.ARCHIVED
            if batch:
                if direct:
                    assert active is not None
                    batch = stamped(batch, after=active.last_seq)
                await self._append(service, key, chosen, batch)
            await self._mark(service, key, direct=direct)

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
        cid = self.conversation_id(key, status)
        async with self._database.session() as session, session.begin():
            service = ConversationService(session, commit=False)
            if status is MessageStatus.ARCHIVED:  # the active conversation's lock first
                await self._lock_active(service, key, create=False)
            try:
                removed = await service.remove_messages(cid, self.user_id, seqs=[abs(idx)])
            except ConversationNotFoundError:
                return None
        return to_chat_message(removed[0]) if removed else None

    async def delete_messages(self, key: str, status: MessageStatus | None = None) -> None:
        """Delete the key's messages of that status (``None``: both, atomically)."""
        key = _check_key(key)
        chosen = _check_optional_status(status)
        async with self._database.session() as session, session.begin():
            service = ConversationService(session, commit=False)
            await self._lock_active(service, key, create=False)
            await self._clear(service, key, self._statuses(chosen))
            if chosen is not MessageStatus.ACTIVE:
                await self._mark(service, key, direct=False)

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
        marker: dict[str, object] = {"key": key, "status": status.value}
        if status is MessageStatus.ARCHIVED:
            marker["direct"] = False
        await service.get_or_create_conversation(
            self.conversation_id(key, status), self.user_id, metadata={METADATA_KEY: marker}
        )

    async def _lock_active(
        self, service: ConversationService, key: str, *, create: bool
    ) -> StoredConversation | None:
        """Lock the key's active conversation (creating it first with ``create``) in the
        caller's transaction, and return it; ``None`` when it does not exist.

        Every write that changes the archived conversation (or both) takes this lock first,
        and reads of archived messages take it too: they then read one state of both, and
        writers that change both never lock them in opposite orders.
        """
        cid = self.conversation_id(key)
        try:
            return await service.lock_conversation(cid, self.user_id)
        except ConversationNotFoundError:
            if not create:
                return None
        await self._create(service, key, MessageStatus.ACTIVE)
        return await service.lock_conversation(cid, self.user_id)

    async def _locked(
        self, service: ConversationService, key: str
    ) -> tuple[StoredConversation, StoredConversation | None] | None:
        """The key's active conversation, locked, and its archived one as it is under that
        lock; ``None`` when the key has neither."""
        active = await self._lock_active(service, key, create=False)
        archived_conversation = await self._conversation(service, key, MessageStatus.ARCHIVED)
        if active is None:
            if archived_conversation is None:
                return None
            # Archived messages without an active conversation (it was deleted through
            # convodb's API): give them one to lock, then read them under its lock.
            active = await self._lock_active(service, key, create=True)
            archived_conversation = await self._conversation(service, key, MessageStatus.ARCHIVED)
        assert active is not None
        return active, archived_conversation

    async def _clear(
        self, service: ConversationService, key: str, statuses: Sequence[MessageStatus]
    ) -> None:
        for each in statuses:
            try:
                await service.clear_messages(self.conversation_id(key, each), self.user_id)
            except ConversationNotFoundError:
                pass

    async def _mark(self, service: ConversationService, key: str, *, direct: bool) -> None:
        """Record in the archived conversation's metadata whether it holds messages added as
        archived directly (then ``seq`` order may not be their order; see ``_page``)."""
        conversation = await self._conversation(service, key, MessageStatus.ARCHIVED)
        if conversation is None:
            return
        marker = conversation.metadata.get(METADATA_KEY)
        marker = dict(marker) if isinstance(marker, dict) else {}
        if marker.get("direct") is direct:
            return
        marker.update(key=key, status=MessageStatus.ARCHIVED.value, direct=direct)
        await service.update_conversation(
            conversation.id, self.user_id, metadata={**conversation.metadata, METADATA_KEY: marker}
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
                try:
                    await service.save_conversation_messages(cid, self.user_id, chunk)
                except ConversationNotFoundError:
                    await self._create(service, key, status)
                    await service.save_conversation_messages(cid, self.user_id, chunk)
            except ValidationError as exc:  # it names the message by its index in the chunk
                raise shifted(exc, i) from None

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
        self, service: ConversationService, key: str, start: int, end: int | None
    ) -> list[StoredMessage]:
        """Active messages ``start`` to ``end`` (``None``: the last) in seq order."""
        cid = self.conversation_id(key, MessageStatus.ACTIVE)
        if start == 0:
            return await self._read(service, cid, "asc", skip=0, take=end)
        conversation = await self._conversation(service, key, MessageStatus.ACTIVE)
        if conversation is None:
            return []
        return await self._slice(service, cid, conversation.message_count, start, end)

    async def _page(
        self,
        service: ConversationService,
        key: str,
        held: tuple[StoredConversation, StoredConversation | None],
        start: int,
        end: int | None,
        status: MessageStatus | None,
    ) -> list[StoredMessage]:
        """Archived messages (``status`` ``None``: and active ones) ``start`` to ``end`` in
        the order they were added, read under the active conversation's lock.

        Moved messages are appended to the archived conversation in the order they were
        added, and before every message still active (the oldest are moved). So unless the
        archived conversation holds messages added as archived directly (which belong
        among the others by their ``"after"``), the order is the archived conversation's
        ``seq`` order followed by the active one's, and a page is read as one: its cost
        grows with ``start`` and the page's size, not with the history.
        """
        active, archived_conversation = held
        if archived_conversation is not None and not _in_seq_order(archived_conversation):
            return (await self._ordered(service, key, both=status is None))[start:end]
        total = archived_conversation.message_count if archived_conversation is not None else 0
        acid = self.conversation_id(key, MessageStatus.ARCHIVED)
        found = await self._slice(service, acid, total, start, end)
        if status is None and (end is None or end > total):
            rest = None if end is None else end - total
            found += await self._slice(
                service, active.id, active.message_count, max(0, start - total), rest
            )
        return found

    async def _slice(
        self, service: ConversationService, cid: str, total: int, start: int, end: int | None
    ) -> list[StoredMessage]:
        """Messages ``start`` to ``end`` of a conversation of ``total`` messages in seq order,
        read from whichever end of the conversation is nearer (the latest page is a read of
        the newest messages)."""
        end = total if end is None else min(total, end)
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
        they were added (see ``archived_positions``)."""
        found = await self._read(
            service, self.conversation_id(key, MessageStatus.ARCHIVED), "asc", skip=0, take=None
        )
        ordered = archived_positions(found)
        if both:
            active = await self._read(
                service, self.conversation_id(key, MessageStatus.ACTIVE), "asc", skip=0, take=None
            )
            ordered += [((m.seq, 0, 0), m) for m in active]
        ordered.sort(key=lambda pair: pair[0])
        return [m for _, m in ordered]


def _in_seq_order(conversation: StoredConversation) -> bool:
    """Whether an archived conversation's ``seq`` order is its messages' order: it was
    created by this store and holds no messages added as archived directly."""
    marker = conversation.metadata.get(METADATA_KEY)
    return isinstance(marker, dict) and marker.get("direct") is False


# -- arguments ---------------------------------------------------------------------------


def _check_key(key: object) -> str:
    """A key convodb can store in a conversation's metadata (as ``_create`` does)."""
    if not isinstance(key, str):
        raise ValidationError("key", f"must be a string, not {type(key).__name__}")
    marker = {"key": key, "status": MessageStatus.ARCHIVED.value, "direct": False}
    try:
        check_metadata("key", {METADATA_KEY: marker}, _LIMITS)
    except ValidationError as exc:
        raise renamed(exc, "key") from None
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
