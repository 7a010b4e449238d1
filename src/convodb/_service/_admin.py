"""``AdminService``: what an operator does across users — retention, erasure, statistics,
export and import.

``ConversationService`` acts for one user at a time, on one conversation at a time; this acts
on the store. Every method that deletes works in bounded transactions: a batch of whole
conversations (at most ``PURGE_BATCH_CONVERSATIONS`` of them, or ``PURGE_BATCH_MESSAGES``
messages, except that one larger conversation is a batch of its own), each locked as an append
locks it, so a concurrent append either commits first or finds the conversation gone. A crash
part-way leaves whole conversations, never half of one; running the same call again finishes
the work.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, inspect, or_, select

from .. import _statements as sql
from .. import migrations
from .._models import api_keys, tables
from .._types import utcnow
from .._validation import check_user_id
from ..errors import ValidationError
from ._base import ServiceBase
from ._export import dumps, export_records
from ._import import ImportReport, import_records
from ._read_export import check_records, parse_lines

__all__ = [
    "PURGE_BATCH_CONVERSATIONS",
    "PURGE_BATCH_MESSAGES",
    "AdminService",
    "ErasureReport",
    "PurgeReport",
    "StoreStats",
    "TableStats",
]

PURGE_BATCH_CONVERSATIONS = 100
PURGE_BATCH_MESSAGES = 10_000


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What a purge deleted (or, in a dry run, would delete)."""

    conversations: int
    messages: int
    dry_run: bool

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """Everything of one user that ``erase_user`` deleted, by kind."""

    user_id: str
    conversations: int
    messages: int
    summaries: int
    attachments: int
    idempotency_keys: int
    """Messages that carried an idempotency key (deleted with them)."""
    api_keys: int

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class TableStats:
    name: str
    rows: int
    bytes: int | None
    """On disk with its indexes, as the database reports it; ``None`` where it cannot tell."""


@dataclass(frozen=True, slots=True)
class StoreStats:
    tables: tuple[TableStats, ...]
    schema_version: str | None
    """The database's schema revision."""
    schema_head: str
    """The revision this convodb needs."""


@dataclass(slots=True)
class _Deleted:
    conversations: int = 0
    messages: int = 0
    summaries: int = 0
    attachments: int = 0
    keys: int = 0


class AdminService(ServiceBase):
    """Operations across users, for an operator: ``purge``, ``erase_user``, ``stats``,
    ``export`` and ``import_file``.

    ```python
    async with db.session() as session:
        admin = AdminService(session)
        report = await admin.erase_user("alice")  # GDPR Art. 17
    ```

    Args: as :class:`ConversationService`'s (``session``, ``limits``, ``commit``,
    ``token_counter``, ``api_key_id``). With ``commit=True`` (the default) each batch commits
    on its own; with ``commit=False`` everything runs in the caller's transaction.
    """

    # -- retention and erasure ------------------------------------------------------------

    async def purge(self, inactive_since: datetime, *, dry_run: bool = False) -> PurgeReport:
        """Delete every conversation with no activity (``updated_at``) since
        ``inactive_since``, with its messages, summaries and attachments.

        Raises:
            ValidationError: ``inactive_since`` is not a timezone-aware datetime, or is in
                the future.
        """
        cutoff = _aware("inactive_since", inactive_since)
        if cutoff > utcnow():
            raise ValidationError("inactive_since", "must not be in the future")
        c = sql.conversations.c
        stale = c.updated_at < cutoff
        if dry_run:
            async with self._read():
                count, messages = (
                    await self.session.execute(
                        select(
                            func.count(), func.coalesce(func.sum(c.last_seq - c.removed_count), 0)
                        ).where(stale)
                    )
                ).one()
            return PurgeReport(int(count), int(messages), dry_run=True)
        deleted = await self._delete_where(stale, recheck=True)
        return PurgeReport(deleted.conversations, deleted.messages, dry_run=False)

    async def erase_user(self, user_id: str) -> ErasureReport:
        """Delete everything of the user: conversations, messages, summaries, attachments,
        idempotency keys, and the HTTP service's API keys bound to the user.

        Idempotent: erasing a user with nothing stored reports zeros. The API keys go first,
        so the user can start nothing new through the HTTP service meanwhile; a conversation
        created while this runs by other means (a service key, the library) may survive it:
        run it again once nothing acts for the user.
        """
        uid = check_user_id(user_id)
        keys = 0
        async with self._write():
            if await self.session.run_sync(
                lambda sync: inspect(sync.connection()).has_table(api_keys.name)
            ):
                result = await self.session.execute(
                    api_keys.delete().where(api_keys.c.user_id == uid)
                )
                keys = max(result.rowcount, 0)  # type: ignore[attr-defined]
        # Under an API key, the first transaction checked it; it may be one of those deleted.
        deleted = await self._delete_where(
            sql.conversations.c.user_id == uid, recheck=False, key_checked=True
        )
        return ErasureReport(
            uid,
            deleted.conversations,
            deleted.messages,
            deleted.summaries,
            deleted.attachments,
            deleted.keys,
            keys,
        )

    async def _delete_where(
        self, condition: Any, *, recheck: bool, key_checked: bool = False
    ) -> _Deleted:
        """Delete the conversations matching ``condition`` in bounded batches; ``recheck``:
        test the condition again under each conversation's lock (it may have changed);
        ``key_checked``: the caller checked the API key already (see ``_write``)."""
        total = _Deleted()
        position: tuple[Any, str] | None = None
        c = sql.conversations.c
        while True:
            statement = select(c.id, c.user_id, c.last_seq, c.updated_at).where(condition)
            if position is not None:
                at, after = position
                statement = statement.where(
                    or_(c.updated_at > at, and_(c.updated_at == at, c.id > after))
                )
            statement = statement.order_by(c.updated_at, c.id).limit(PURGE_BATCH_CONVERSATIONS)
            async with self._read(keyed=key_checked):
                found = (await self.session.execute(statement)).all()
            if not found:
                return total
            position = (found[-1][3], found[-1][0])
            for batch in _batches(found):
                async with self._write(keyed=key_checked):
                    for cid, uid, _last_seq, _at in batch:
                        if await self._backend.lock(self.session, cid, uid) is None:
                            continue  # deleted meanwhile
                        if recheck:
                            still = select(c.id).where(c.id == cid, condition)
                            if (await self.session.execute(still)).first() is None:
                                continue  # active again
                        keyed = select(func.count()).where(
                            sql.messages.c.conversation_id == cid, sql.messages.c.key.is_not(None)
                        )
                        keys = int((await self.session.execute(keyed)).scalar_one())
                        messages, summaries, attachments = await self._delete_rows(cid)
                        total.conversations += 1
                        total.messages += messages
                        total.summaries += summaries
                        total.attachments += attachments
                        total.keys += keys

    # -- statistics -----------------------------------------------------------------------

    async def stats(self) -> StoreStats:
        """Rows and bytes of each of convodb's tables, and the schema version."""
        async with self._read():
            present = await self.session.run_sync(
                lambda sync: set(inspect(sync.connection()).get_table_names())
            )
            names = [t.name for t in tables(with_api_keys=True) if t.name in present]
            rows = {}
            for table in tables(with_api_keys=True):
                if table.name in present:
                    count = select(func.count()).select_from(table)
                    rows[table.name] = int((await self.session.execute(count)).scalar_one())
            sizes = await self._backend.table_sizes(self.session, names)
            version = await self.session.run_sync(
                lambda sync: migrations.select_version(sync.connection())
            )
        return StoreStats(
            tuple(TableStats(name, rows[name], sizes.get(name)) for name in names),
            version,
            migrations.HEAD,
        )

    # -- export and import ----------------------------------------------------------------

    def export(self, *, user_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """The store (or one user's part of it) as export records, in the documented order
        (see ``convodb._service._export``), streamed: a page of messages at a time."""
        return export_records(self, user_id=user_id)

    @staticmethod
    def export_line(record: dict[str, Any]) -> str:
        """One record of :meth:`export` as a line of the export file, newline included."""
        return dumps(record) + "\n"

    async def count(self, *, user_id: str | None = None) -> tuple[int, int]:
        """``(conversations, messages)`` in the store, or of one user."""
        c = sql.conversations.c
        statement = select(func.count(), func.coalesce(func.sum(c.last_seq - c.removed_count), 0))
        if user_id is not None:
            statement = statement.where(c.user_id == check_user_id(user_id))
        async with self._read():
            conversations, messages = (await self.session.execute(statement)).one()
        return int(conversations), int(messages)

    async def import_file(
        self, path: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> ImportReport:
        """Import an export file (see ``convodb._service._import``): idempotent, streamed.

        Every line is checked first, so a file with a bad line stores nothing; then it is
        read again and imported. A last line cut short (an interrupted export) is left out
        and reported (``ImportReport.cut_short_at``). ``progress(phase, bytes_read,
        file_size)`` is called as it goes, ``phase`` being ``"check"``, then ``"import"``.

        Raises:
            ValidationError: a line is not a valid record (it names the line and the field).
            OSError: the file cannot be read.
        """
        async for _ in check_records(parse_lines(_read(path, "check", progress)), self):
            pass
        cut_short: list[int] = []
        lines = parse_lines(_read(path, "import", progress), cut_short.append)
        report = await import_records(self, lines)
        report.cut_short_at = cut_short[0] if cut_short else None
        return report


Progress = Callable[[str, int, int], None]


async def _read(
    path: str | os.PathLike[str], phase: str, progress: Progress | None
) -> AsyncIterator[bytes]:
    """The file's lines (with their newlines; the last may lack it), read a few MiB at a
    time in a worker thread (never blocking the event loop on the disk); a line longer than
    ``MAX_LINE_BYTES`` is a ValidationError, not a gigabyte held in memory."""
    file = await asyncio.to_thread(open, path, "rb")
    try:
        size = (await asyncio.to_thread(os.fstat, file.fileno())).st_size
        done = number = 0
        pending: list[bytes] = []  # the start of a line that continues in the next chunk
        pending_size = 0
        while chunk := await asyncio.to_thread(file.read, _READ_CHUNK):
            start = 0
            while (end := chunk.find(b"\n", start)) != -1:
                line = chunk[start : end + 1]
                if pending:
                    line = b"".join((*pending, line))
                    pending.clear()
                    pending_size = 0
                number += 1
                yield line
                start = end + 1
            if start < len(chunk):
                pending.append(chunk[start:])
                pending_size += len(chunk) - start
                if pending_size > MAX_LINE_BYTES:
                    raise ValidationError(
                        f"line {number + 1}",
                        f"is longer than {MAX_LINE_BYTES} bytes; no export's line is",
                    )
            done += len(chunk)
            if progress is not None:
                progress(phase, done, size)
        if pending:
            yield b"".join(pending)
    finally:
        await asyncio.to_thread(file.close)


_READ_CHUNK = 4 << 20
MAX_LINE_BYTES = 1 << 30
"""The longest line an import reads (a message with its binary data, base64)."""


def _aware(field: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValidationError(field, "must be a timezone-aware datetime")
    return value


def _batches(rows: Sequence[Any]) -> Iterable[list[Any]]:
    """Whole conversations, up to PURGE_BATCH_MESSAGES messages a batch (a larger one alone)."""
    batch: list[Any] = []
    messages = 0
    for row in rows:
        if batch and messages + row[2] > PURGE_BATCH_MESSAGES:
            yield batch
            batch, messages = [], 0
        batch.append(row)
        messages += row[2]
    if batch:
        yield batch
