"""Import: an export file (see ``_export``) back into the store, idempotently.

An import keeps ids, seqs, timestamps, idempotency keys and stored token counts. Per
conversation: a new one is created; one that exists with the same owner, title, metadata and
creation time and holds a prefix of the file's messages (a resumed export) gets the rest
appended; one whose messages are all in the file already is left as it is; anything else
(another owner, another title, a message that differs) is a conflict: reported with its line,
skipped, never overwritten. Messages are written in batches (``IMPORT_BATCH`` a transaction),
each under the conversation's lock; a crash part-way is finished by importing the file again.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from .. import _statements as sql
from ._base import ServiceBase
from ._export import sorted_json
from ._read_export import ConversationRecord, MessageRecord, SummaryRecord, check_records

__all__ = ["IMPORT_BATCH", "ImportConflict", "ImportReport", "import_records"]

IMPORT_BATCH = 500
"""Messages written per transaction by an import, at most."""
IMPORT_BATCH_BYTES = 32 << 20
"""Bytes (text and binary data) written per transaction by an import, about: a batch ends
with the message that reaches it."""
_MESSAGE_PAGE = 200
_MAX_CONFLICTS_KEPT = 1000


@dataclass(frozen=True, slots=True)
class ImportConflict:
    """A conversation (or summary) the import skipped, and why."""

    conversation_id: str
    line: int
    reason: str


@dataclass(slots=True)
class ImportReport:
    """What an import did, per conversation and in messages and summaries written."""

    created: int = 0
    """Conversations that did not exist."""
    extended: int = 0
    """Conversations that held a prefix of the file's messages and got the rest."""
    unchanged: int = 0
    """Conversations that held every message of the file already."""
    messages: int = 0
    summaries: int = 0
    conflicts: list[ImportConflict] = field(default_factory=list)
    """The first conflicts (at most 1000; ``conflict_count`` counts them all)."""
    conflict_count: int = 0
    cut_short_at: int | None = None
    """The number of the last line when it was incomplete (an interrupted export) and left
    out; importing the whole export later adds the rest."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "extended": self.extended,
            "unchanged": self.unchanged,
            "messages": self.messages,
            "summaries": self.summaries,
            "conflicts": self.conflict_count,
        }


async def import_records(
    service: ServiceBase, records: AsyncIterable[tuple[int, dict[str, Any]]]
) -> ImportReport:
    report = ImportReport()
    state: _Importing | None = None
    async for number, item in check_records(records, service):
        if isinstance(item, ConversationRecord):
            if state is not None:
                await state.finish()
            state = await _Importing.start(service, report, number, item)
        elif state is None:  # check_records puts a conversation first
            raise AssertionError("a message or summary before any conversation")
        elif isinstance(item, MessageRecord):
            await state.message(number, item)
        else:
            state.summaries.append((number, item))
    if state is not None:
        await state.finish()
    return report


class _Importing:
    """One conversation being imported: compared with what is stored, then written."""

    def __init__(
        self, service: ServiceBase, report: ImportReport, line: int, conv: ConversationRecord
    ) -> None:
        self.service, self.report, self.line, self.conv = service, report, line, conv
        self.mode = "compare"  # compare | append | conflict
        self.created = False
        self.stored: list[Any] = []
        self.stored_after = 0
        self.stored_done = False
        self.pending: list[MessageRecord] = []
        self.pending_bytes = 0
        self.summaries: list[tuple[int, SummaryRecord]] = []
        self.written = 0
        self.last_message = 0
        """The highest seq of the file's messages of this conversation."""

    @classmethod
    async def start(
        cls, service: ServiceBase, report: ImportReport, line: int, conv: ConversationRecord
    ) -> _Importing:
        state = cls(service, report, line, conv)
        c = sql.conversations.c
        async with service._write():
            row = (
                await service.session.execute(
                    select(c.user_id, c.title, c["metadata"], c.created_at).where(c.id == conv.id)
                )
            ).first()
            if row is None:
                values = {
                    "id": conv.id,
                    "user_id": conv.user_id,
                    "title": conv.title,
                    "metadata": conv.metadata,
                    "last_seq": 0,
                    "created_at": conv.created_at,
                    "updated_at": conv.updated_at,
                }
                state.created = await service._insert_conversation(values) is not None
        if state.created:
            state.mode, state.stored_done = "append", True
            return state
        if row is None:  # created meanwhile by someone else: compare with that
            async with service._read():
                row = (
                    await service.session.execute(
                        select(c.user_id, c.title, c["metadata"], c.created_at).where(
                            c.id == conv.id
                        )
                    )
                ).first()
        if row is None:
            state.conflict(line, "the conversation was deleted while it was imported")
        elif row[0] != conv.user_id:
            state.conflict(line, "a conversation with this id belongs to another user")
        elif (row[1], sorted_json(row[2]), row[3]) != (
            conv.title,
            sorted_json(conv.metadata),
            conv.created_at,
        ):
            state.conflict(line, "the stored conversation's title, metadata or creation differ")
        return state

    def conflict(self, line: int, reason: str) -> None:
        """The conversation conflicts: nothing more of it is written."""
        if self.mode == "conflict":
            return
        self.mode = "conflict"
        self.pending.clear()
        self._summary_conflict(line, reason)

    def _summary_conflict(self, line: int, reason: str) -> None:
        self.report.conflict_count += 1
        if len(self.report.conflicts) < _MAX_CONFLICTS_KEPT:
            self.report.conflicts.append(ImportConflict(self.conv.id, line, reason))

    async def message(self, line: int, message: MessageRecord) -> None:
        self.last_message = message.seq
        if self.mode == "compare":
            stored = await self._next_stored()
            if stored is None:
                self.mode = "append"
            elif _comparable(message.row(self.conv.id)) != _comparable(stored):
                self.conflict(line, f"message seq {message.seq} differs from the stored one")
                return
            else:
                return
        if self.mode == "append":
            self.pending.append(message)
            self.pending_bytes += message.size
            if len(self.pending) >= IMPORT_BATCH or self.pending_bytes >= IMPORT_BATCH_BYTES:
                await self._flush(line)

    async def _next_stored(self) -> dict[str, Any] | None:
        if not self.stored and not self.stored_done:
            m = sql.messages.c
            statement = (
                select(*(m[name] for name in _STORED))
                .where(m.conversation_id == self.conv.id, m.seq > self.stored_after)
                .order_by(m.seq)
                .limit(_MESSAGE_PAGE)
            )
            async with self.service._read():
                self.stored = list((await self.service.session.execute(statement)).all())[::-1]
            self.stored_done = len(self.stored) < _MESSAGE_PAGE
            if self.stored:
                self.stored_after = self.stored[0][1]
        if not self.stored:
            return None
        return dict(zip(_STORED, self.stored.pop(), strict=True))

    async def _flush(self, line: int) -> None:
        if not self.pending or self.mode != "append":
            return
        batch, self.pending, self.pending_bytes = self.pending, [], 0
        try:
            await self._write(line, batch)
        except IntegrityError:  # rolled back; a file an export did not write
            self.conflict(line, "a message repeats the key or seq of another in the conversation")

    async def _write(self, line: int, batch: list[MessageRecord]) -> None:
        service, cid = self.service, self.conv.id
        async with service._write():
            last_seq = await service._backend.lock(service.session, cid, self.conv.user_id)
            if last_seq is None:
                self.conflict(line, "the conversation was deleted while it was imported")
                return
            if last_seq >= batch[0].seq:
                self.conflict(
                    line,
                    f"seq {batch[0].seq} is taken: the conversation was appended to meanwhile",
                )
                return
            attachments = {
                a.sha256: {
                    "conversation_id": cid,
                    "sha256": a.sha256,
                    "media_type": a.media_type,
                    "size": len(a.data),
                    "data": a.data,
                    "created_at": m.created_at,
                }
                for m in batch
                for a in m.input.attachments
            }
            if attachments:
                insert = service._backend.insert_ignoring_conflicts(sql.attachments)
                await service.session.execute(insert, list(attachments.values()))
            await service.session.execute(sql.INSERT_MESSAGES, [m.row(cid) for m in batch])
            await service.session.execute(
                update(sql.conversations)
                .where(sql.conversations.c.id == cid)
                .values(last_seq=batch[-1].seq)
            )
        if self.mode == "append":
            self.written += len(batch)
            self.report.messages += len(batch)

    async def finish(self) -> None:
        await self._flush(self.line)
        if self.mode == "conflict":
            return
        service, conv, s = self.service, self.conv, sql.summaries.c
        wrote_summaries = 0
        async with service._write():
            last_seq = await service._backend.lock(service.session, conv.id, conv.user_id)
            if last_seq is None:
                self.conflict(self.line, "the conversation was deleted while it was imported")
                return
            stored = {
                row[0]: row[1:]
                for row in await service.session.execute(
                    select(s.upto_seq, s.id, s.content).where(s.conversation_id == conv.id)
                )
            }
            # The newest message's seq. Not the file's last_seq: a file cut short (an export
            # interrupted) must leave room for the rest, which importing a whole file adds.
            last_seq = max(last_seq, self.last_message)
            new = []
            for line, summary in self.summaries:
                have = stored.get(summary.upto_seq)
                if summary.upto_seq > last_seq:
                    self._summary_conflict(
                        line,
                        f"summary upto_seq {summary.upto_seq} covers "
                        "messages the conversation does not have",
                    )
                elif have is None:
                    new.append(summary)
                elif tuple(have) != (summary.id, summary.content):
                    reason = f"summary upto_seq {summary.upto_seq} differs from the stored one"
                    self._summary_conflict(line, reason)
            if new:
                await service.session.execute(
                    sql.INSERT_SUMMARY,
                    [{"conversation_id": conv.id, **_summary_row(x)} for x in new],
                )
                wrote_summaries = len(new)
            held = (
                await service.session.execute(
                    select(func.count()).where(sql.messages.c.conversation_id == conv.id)
                )
            ).scalar_one()
            # The export's gaps (messages removed before it) stay gaps: counted as removed.
            values: dict[str, Any] = {"last_seq": last_seq, "removed_count": last_seq - held}
            if self.created or self.written:
                values["updated_at"] = conv.updated_at  # as exported
            await service.session.execute(
                update(sql.conversations).where(sql.conversations.c.id == conv.id).values(values)
            )
        self.report.summaries += wrote_summaries
        if self.created:
            self.report.created += 1
        elif self.written:
            self.report.extended += 1
        else:
            self.report.unchanged += 1


_STORED = (
    "conversation_id",
    "seq",
    "id",
    "role",
    "content",
    "parts",
    "tool_calls",
    "tool_name",
    "tool_call_id",
    "metadata",
    "key",
    "token_count",
    "created_at",
)
"""The message columns an import compares, in the order of ``MessageRecord.row``'s keys."""


def _summary_row(summary: SummaryRecord) -> dict[str, Any]:
    return {
        "upto_seq": summary.upto_seq,
        "id": summary.id,
        "content": summary.content,
        "token_count": summary.token_count,
        "metadata": summary.metadata,
        "created_at": summary.created_at,
    }


def _comparable(row: dict[str, Any]) -> tuple[Any, ...]:
    """A message's fields as equal messages compare equal across databases."""
    return (
        row["seq"],
        row["id"],
        row["role"],
        row["content"],
        sorted_json(row["parts"]),
        sorted_json(row["tool_calls"]),
        row["tool_name"],
        row["tool_call_id"],
        sorted_json(row["metadata"]),
        row["key"],
        row["token_count"],
        row["created_at"],
    )
