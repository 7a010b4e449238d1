"""Reading an export: its lines parsed and every record checked, as they stream.

A record is validated as an append validates a message (``check_message``: roles, parts,
binary data, limits), plus what only an export carries (seqs, ids, timestamps, stored token
counts), and the order of records is checked: the header first, then per conversation its
line, its messages in rising ``seq``, its summaries in rising ``upto_seq``. An error names
the line and the field.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .._message_input import MessageInput, check_message
from .._models import KEY_LENGTH
from .._validation import (
    check_conversation_id,
    check_metadata,
    check_prompt_text,
    check_seq,
    check_text,
    check_title,
    check_user_id,
)
from ..errors import LimitExceededError, ValidationError
from ._base import ServiceBase
from ._export import EXPORT_FORMAT, EXPORT_VERSION

__all__ = ["ConversationRecord", "MessageRecord", "SummaryRecord", "check_records", "parse_lines"]

_MESSAGE_ID_LENGTH = 36
_MAX_TOKEN_COUNT = 2**31 - 1  # an INTEGER column on every database
_FIRST_YEAR = 1000


async def parse_lines(
    lines: AsyncIterable[bytes], cut_short: Callable[[int], None] | None = None
) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each line of an export; a line that is not a JSON object
    is a ValidationError naming it. A last line without its newline that does not parse is
    where an interrupted export stopped: it is left out, and ``cut_short`` told its number."""
    number = 0
    async for line in lines:
        number += 1
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, ValueError) as exc:
            if not line.endswith(b"\n"):  # only the last line can lack it
                if cut_short is not None:
                    cut_short(number)
                return
            raise ValidationError(f"line {number}", f"is not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise ValidationError(f"line {number}", "must be a JSON object")
        yield number, record


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    id: str
    user_id: str
    title: str | None
    metadata: dict[str, Any]
    last_seq: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class MessageRecord:
    seq: int
    id: str
    input: MessageInput
    key: str | None
    token_count: int | None
    created_at: datetime

    @property
    def size(self) -> int:
        """Bytes it holds, about: its text and its binary data."""
        m = self.input
        text = len(m.content) if isinstance(m.content, str) else 0
        return text + sum(len(a.data) for a in m.attachments)

    def row(self, cid: str) -> dict[str, Any]:
        m = self.input
        return {
            "conversation_id": cid,
            "seq": self.seq,
            "id": self.id,
            "role": m.role,
            "content": m.content if isinstance(m.content, str) else None,
            "parts": m.parts,
            "tool_calls": m.tool_calls,
            "tool_name": m.tool_name,
            "tool_call_id": m.tool_call_id,
            "metadata": m.metadata,
            "key": self.key,
            "token_count": self.token_count,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class SummaryRecord:
    upto_seq: int
    id: str
    content: str
    token_count: int | None
    metadata: dict[str, Any]
    created_at: datetime


_FIELDS = {
    "header": "type format version exported_at convodb schema user_id",
    "conversation": "type id user_id title metadata last_seq created_at updated_at",
    "message": "type conversation_id seq id role content tool_calls tool_name tool_call_id "
    "metadata key token_count created_at",
    "summary": "type conversation_id upto_seq id content token_count metadata created_at",
}
_FIELD_SETS = {kind: frozenset(names.split()) for kind, names in _FIELDS.items()}


async def check_records(
    records: AsyncIterable[tuple[int, dict[str, Any]]], service: ServiceBase
) -> AsyncIterator[tuple[int, ConversationRecord | MessageRecord | SummaryRecord]]:
    """Validate an export's records and their order, as they stream; ValidationError names
    the line and the field. The header is checked and not yielded."""
    current: ConversationRecord | None = None
    last_seq = last_summary = 0
    expect = "header"
    async for number, record in records:
        where = f"line {number}"
        kind = record.get("type")
        if kind not in _FIELDS:
            raise ValidationError(
                f"{where}: type", f"must be one of {sorted(_FIELDS)}; got {kind!r}"
            )
        unknown = set(record) - _FIELD_SETS[kind]
        if unknown:
            raise ValidationError(where, f"has unknown field(s) {sorted(unknown)}")
        if expect == "header":
            if kind != "header":
                raise ValidationError(where, "must be the export's header")
            if record.get("format") != EXPORT_FORMAT:
                raise ValidationError(f"{where}: format", f"must be {EXPORT_FORMAT!r}")
            if record.get("version") != EXPORT_VERSION:
                raise ValidationError(
                    f"{where}: version",
                    f"is {record.get('version')!r}; this convodb reads version {EXPORT_VERSION}",
                )
            expect = "body"
            continue
        if kind == "header":
            raise ValidationError(where, "a header may only be the first line")
        if kind == "conversation":
            current = _conversation(where, record, service)
            last_seq = last_summary = 0
            yield number, current
            continue
        if current is None or record.get("conversation_id") != current.id:
            raise ValidationError(
                f"{where}: conversation_id", "must be that of the conversation line before it"
            )
        if kind == "message":
            if last_summary:
                raise ValidationError(where, "messages must come before the summaries")
            message = _message(where, record, service)
            if message.seq <= last_seq or message.seq > current.last_seq:
                raise ValidationError(
                    f"{where}: seq",
                    f"must be above the previous message's ({last_seq}) and at most the "
                    f"conversation's last_seq ({current.last_seq}); got {message.seq}",
                )
            last_seq = message.seq
            yield number, message
        else:
            summary = _summary(where, record, service)
            if summary.upto_seq <= last_summary or summary.upto_seq > current.last_seq:
                raise ValidationError(
                    f"{where}: upto_seq",
                    f"must be above the previous summary's ({last_summary}) and at most the "
                    f"conversation's last_seq ({current.last_seq}); got {summary.upto_seq}",
                )
            last_summary = summary.upto_seq
            yield number, summary
    if expect == "header":
        raise ValidationError("line 1", "the file is empty: an export starts with its header")


def _conversation(where: str, r: dict[str, Any], service: ServiceBase) -> ConversationRecord:
    return ConversationRecord(
        id=check_conversation_id(r.get("id"), f"{where}: id"),
        user_id=_field(where, check_user_id, r.get("user_id")),
        title=_field(where, check_title, r.get("title")),
        metadata=check_metadata(f"{where}: metadata", r.get("metadata"), service.limits),
        last_seq=check_seq(f"{where}: last_seq", r.get("last_seq")),
        created_at=_timestamp(f"{where}: created_at", r.get("created_at")),
        updated_at=_timestamp(f"{where}: updated_at", r.get("updated_at")),
    )


def _message(where: str, r: dict[str, Any], service: ServiceBase) -> MessageRecord:
    fields = ("role", "content", "tool_calls", "tool_name", "tool_call_id", "metadata")
    checked = check_message(f"{where}: message", {f: r.get(f) for f in fields}, service.limits)
    key = r.get("key")
    if key is not None:  # kept as stored: batch keys (idem:...) included
        key = check_text(f"{where}: key", key, max_length=KEY_LENGTH) or None
    return MessageRecord(
        seq=check_seq(f"{where}: seq", r.get("seq"), lowest=1),
        id=_id(f"{where}: id", r.get("id")),
        input=checked,
        key=key,
        token_count=_count(f"{where}: token_count", r.get("token_count")),
        created_at=_timestamp(f"{where}: created_at", r.get("created_at")),
    )


def _summary(where: str, r: dict[str, Any], service: ServiceBase) -> SummaryRecord:
    content = check_prompt_text(f"{where}: content", r.get("content"), service.limits)
    if not content:
        raise ValidationError(f"{where}: content", "must not be empty")
    return SummaryRecord(
        upto_seq=check_seq(f"{where}: upto_seq", r.get("upto_seq"), lowest=1),
        id=_id(f"{where}: id", r.get("id")),
        content=content,
        token_count=_count(f"{where}: token_count", r.get("token_count")),
        metadata=check_metadata(f"{where}: metadata", r.get("metadata"), service.limits),
        created_at=_timestamp(f"{where}: created_at", r.get("created_at")),
    )


def _field(where: str, check: Any, value: object) -> Any:
    try:
        return check(value)
    except ValidationError as exc:
        reason = str(exc).removeprefix(f"{exc.field}: ")
        raise type(exc)(f"{where}: {exc.field}", reason, limit=exc.limit) from None


def _id(field: str, value: object) -> str:
    text = check_text(field, value, max_length=_MESSAGE_ID_LENGTH)
    if not text:
        raise ValidationError(field, "must not be empty")
    return text


def _count(field: str, value: object) -> int | None:
    if value is None:
        return None
    count = check_seq(field, value)
    if count > _MAX_TOKEN_COUNT:
        raise LimitExceededError(
            field, f"is {count}; the limit is {_MAX_TOKEN_COUNT}", limit=_MAX_TOKEN_COUNT
        )
    return count


def _timestamp(field: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise ValidationError(field, f"must be an ISO 8601 string, not {type(value).__name__}")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(field, f"is not an ISO 8601 timestamp: {value[:40]!r}") from None
    if at.tzinfo is None:
        raise ValidationError(field, "must carry its UTC offset")
    try:
        utc = at.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or utc.year < _FIRST_YEAR:  # MariaDB's DATETIME starts at year 1000
        raise ValidationError(field, f"must be in the years {_FIRST_YEAR} to 9999 (UTC)")
    return utc
