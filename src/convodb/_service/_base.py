"""What every part of ``ConversationService`` stands on: its session and settings, its
transactions, and the ownership-checked reads and the lock that its methods share.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from typing import Any, Final, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from .. import _statements as sql
from .._db import owns_transaction, read_transaction, write_transaction
from .._models import checkpoint_tables
from .._parts import AudioPart, FilePart, ImagePart, Part
from .._records import StoredMessage
from .._validation import MAX_SEQ, Limits
from ..errors import ApiKeyRevokedError, ConversationNotFoundError
from ..storage import Backend, Row, backend_for
from ..tokens import TokenCounter, default_counter

__all__ = ["NO_SEQ", "UNSET", "Order", "ServiceBase"]

NO_SEQ = MAX_SEQ + 1  # above any seq: "from the newest message"
UNSET: Final[Any] = object()
_DEFAULT_LIMITS = Limits()  # frozen: one for every service (a service per request)
Order = Literal["asc", "desc"]


class ServiceBase:
    """The state and shared internals of :class:`convodb.ConversationService`."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        limits: Limits | None = None,
        commit: bool = True,
        token_counter: TokenCounter | None = None,
        api_key_id: str | None = None,
    ) -> None:
        self.session = session
        self.limits = limits or _DEFAULT_LIMITS
        self.token_counter = token_counter if token_counter is not None else _process_counter()
        self.api_key_id = api_key_id
        self._commit = commit

    async def _check_key(self, *, own: bool) -> None:
        """Raise :class:`ApiKeyRevokedError` unless the key the service acts under is live."""
        key = self.api_key_id
        if key is None:
            return
        rows = await self._backend.rows(self.session, sql.KEY_LIVE, {"key": key}, own=own)
        if not rows:
            raise ApiKeyRevokedError(key)

    async def _lock(self, cid: str, uid: str) -> int:
        """Lock the user's conversation until the transaction ends; returns its ``last_seq``."""
        last_seq = await self._backend.lock(self.session, cid, uid)
        if last_seq is None:
            raise ConversationNotFoundError(cid)
        return last_seq

    async def _head(self, cid: str, uid: str, *, own: bool) -> tuple[int, int, str | None, int]:
        """``(last_seq, newest summary's upto_seq or 0, its text, removed_count)`` of the
        user's conversation."""
        params = {"cid": cid, "uid": uid}
        rows = await self._backend.rows(self.session, sql.HEAD, params, own=own)
        if not rows:
            raise ConversationNotFoundError(cid)
        last_seq, upto_seq, text, *_, removed = rows[0]
        return int(last_seq), int(upto_seq or 0), text, int(removed)

    async def _held_after(
        self, cid: str, uid: str, floor: int, *, last_seq: int, removed: int, own: bool
    ) -> int:
        """How many messages the conversation holds after ``floor``: ``last_seq - floor``
        while nothing was removed from it, else counted."""
        if not removed:
            return last_seq - floor
        params = {"cid": cid, "uid": uid, "floor": floor}
        rows = await self._backend.rows(self.session, sql.COUNT_AFTER, params, own=own)
        return int(rows[0][0])

    async def _with_attachment_data(
        self, messages: list[StoredMessage], cid: str, uid: str
    ) -> list[StoredMessage]:
        """The messages with the binary data of their parts loaded (base64, in ``data``);
        the same list when none refers to stored data."""
        digests = sorted({d for m in messages for d in _stored_data(m)})
        if not digests:
            return messages
        params = {"cid": cid, "uid": uid, "digests": digests}
        found = dict((await self.session.execute(sql.ATTACHMENT_DATA, params)).all())
        encoded = {d: base64.b64encode(data).decode("ascii") for d, data in found.items()}
        return [
            replace(m, content=tuple(_with_data(p, encoded) for p in m.content))
            if isinstance(m.content, tuple) and _stored_data(m)
            else m
            for m in messages
        ]

    def _write(self, *, keyed: bool = False) -> AbstractAsyncContextManager[None]:
        """A write transaction; under an API key, its first statement checks the key.

        Args:
            keyed: the call checks the key itself: in its first statement (see ``_owned``),
                or in an earlier transaction of the same call. Otherwise one statement of
                its own does, before the caller's.
        """
        transaction = write_transaction(self.session, commit=self._commit)
        if self.api_key_id is None or keyed:
            return transaction
        return self._key_checked(transaction, own=self._owns())

    def _read(self, *, keyed: bool = False) -> AbstractAsyncContextManager[bool]:
        """A read transaction, yielding whether the service owns it; ``keyed`` as in
        :meth:`_write`."""
        transaction = read_transaction(self.session, commit=self._commit)
        if self.api_key_id is None or keyed:
            return transaction
        return self._key_checked(transaction, own=None)

    @asynccontextmanager
    async def _key_checked(
        self, transaction: AbstractAsyncContextManager[Any], *, own: bool | None
    ) -> AsyncIterator[Any]:
        async with transaction as entered:
            await self._check_key(own=entered if own is None else own)
            yield entered

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

    async def _delete_rows(self, cid: str) -> tuple[int, int, int]:
        """Delete the conversation and everything in it, in the caller's transaction, which
        holds its lock; ``(messages, summaries, attachments)`` deleted."""
        counts = await self._delete_contents(cid)
        for table in checkpoint_tables():  # a LangGraph thread's checkpoints
            await self.session.execute(table.delete().where(table.c.conversation_id == cid))
        await self.session.execute(sql.conversations.delete().where(sql.conversations.c.id == cid))
        return counts

    async def _delete_contents(self, cid: str) -> tuple[int, int, int]:
        """Delete the conversation's messages, summaries and attachments, in the caller's
        transaction, which holds its lock; ``(messages, summaries, attachments)`` deleted."""
        # Explicit, not only ON DELETE CASCADE: a SQLite connection that convodb did not
        # set up has foreign keys off, and orphans would reappear under a reused id.
        counts = []
        for table in (sql.messages, sql.summaries, sql.attachments):
            result = await self.session.execute(
                table.delete().where(table.c.conversation_id == cid)
            )
            counts.append(max(result.rowcount, 0))  # type: ignore[attr-defined]
        return counts[0], counts[1], counts[2]

    async def _owned_rows(
        self, statement: Any, cid: str, uid: str, *, own: bool, **params: Any
    ) -> list[Sequence[Any]]:
        """Rows of the user's conversation; ownership is checked by the same statement.

        No rows means an empty page or not the user's conversation; only then a second,
        conversation-only query tells which.
        """
        return await self._owned(statement, cid, uid, own=own, into=None, params=params)

    async def _owned_messages(
        self, statement: Any, cid: str, uid: str, *, own: bool, **params: Any
    ) -> list[StoredMessage]:
        """:meth:`_owned_rows` of ``MSG_COLUMNS``, as records."""
        return await self._owned(
            statement, cid, uid, own=own, into=sql.message_record, params=params
        )

    async def _owned(
        self, statement: Any, cid: str, uid: str, *, own: bool, into: Row | None, params: Any
    ) -> list[Any]:
        params = {"cid": cid, "uid": uid, **params}
        if self.api_key_id is not None:  # the same statement checks the key
            statement, params["key"] = sql.keyed(statement), self.api_key_id
        rows = await self._backend.rows(self.session, statement, params, own=own, into=into)
        if not rows:
            await self._check_key(own=own)
            if await self._select_conversation(cid, uid) is None:
                raise ConversationNotFoundError(cid)
        return rows


@functools.cache
def _process_counter() -> TokenCounter:
    """:func:`default_counter`, resolved once per process rather than once per service (a
    service per request): it looks at the disk, and on first use hashes tiktoken's file."""
    return default_counter()


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
