"""Export: the store as JSON Lines, losslessly (``convodb import`` reads it back, see
``_import``).

The format (``convodb-export``, version 1), one JSON object per line, UTF-8:

1. ``{"type": "header", "format": "convodb-export", "version": 1, "exported_at", "convodb",
   "schema", "user_id"}``: what wrote it (``user_id``: the one user exported, or ``null``);
2. per conversation, in id order: ``{"type": "conversation", "id", "user_id", "title",
   "metadata", "last_seq", "created_at", "updated_at"}``, then its messages in ``seq`` order,
   ``{"type": "message", "conversation_id", "seq", "id", "role", "content", "tool_calls",
   "tool_name", "tool_call_id", "metadata", "key", "token_count", "created_at"}``, then its
   summaries in ``upto_seq`` order, ``{"type": "summary", "conversation_id", "upto_seq",
   "id", "content", "token_count", "metadata", "created_at"}``.

``content`` is the text, or the list of parts as ``NewMessage`` takes them, binary data
inline (base64), so that an import validates every message exactly as an append does and
stores each attachment once per conversation again. Timestamps are ISO 8601 with their UTC
offset; JSON objects inside records (metadata, provider items) have their keys sorted, so two
exports of equal data are equal byte for byte (but for the header's ``exported_at``), whichever
database they came from.

An export streams: a page of conversations, then a page of messages at a time, each read in
a transaction of its own, and a conversation's messages stop at the ``last_seq`` its line
shows, so a conversation appended to meanwhile is exported as it was when its line was read.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from importlib.metadata import version
from typing import Any

from sqlalchemy import select

from .. import _statements as sql
from .. import migrations
from .._parts import AudioPart, FilePart, ImagePart, part_to_dict
from .._records import StoredMessage
from .._types import utcnow
from .._validation import check_user_id
from ._base import ServiceBase

__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "dumps", "export_records", "sorted_json"]

EXPORT_FORMAT = "convodb-export"
EXPORT_VERSION = 1
_CONVERSATION_PAGE = 100
_MESSAGE_PAGE = 200


async def export_records(
    service: ServiceBase, *, user_id: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    uid = None if user_id is None else check_user_id(user_id)
    yield {
        "type": "header",
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": _time(utcnow()),
        "convodb": version("convodb"),
        "schema": migrations.HEAD,
        "user_id": uid,
    }
    c = sql.conversations.c
    after = ""
    while True:
        statement = select(*sql.CONV_COLUMNS).where(c.id > after)
        if uid is not None:
            statement = statement.where(c.user_id == uid)
        statement = statement.order_by(c.id).limit(_CONVERSATION_PAGE)
        async with service._read():
            page = [
                sql.conversation_record(row) for row in await service.session.execute(statement)
            ]
        if not page:
            return
        for conversation in page:
            yield {
                "type": "conversation",
                "id": conversation.id,
                "user_id": conversation.user_id,
                "title": conversation.title,
                "metadata": sorted_json(conversation.metadata),
                "last_seq": conversation.last_seq,
                "created_at": _time(conversation.created_at),
                "updated_at": _time(conversation.updated_at),
            }
            owner = {"cid": conversation.id, "uid": conversation.user_id}
            seq = 0
            while seq < conversation.last_seq:
                params = {**owner, "seq": seq, "n": _MESSAGE_PAGE}
                async with service._read():
                    rows = (await service.session.execute(sql.AFTER, params)).all()
                messages = [sql.message_record(r) for r in rows]
                messages = [m for m in messages if m.seq <= conversation.last_seq]
                if not messages:
                    break
                for message in messages:  # binary data: one message's at a time
                    yield _message_record(await _with_attachments(service, message, owner))
                seq = messages[-1].seq
            # Summaries too stop at the conversation line's last_seq: one saved meanwhile may
            # cover messages this export does not hold.
            summaries = select(*sql.SUM_COLUMNS).where(
                sql.summaries.c.conversation_id == conversation.id,
                sql.summaries.c.upto_seq <= conversation.last_seq,
            )
            async with service._read():
                summary_rows = (
                    await service.session.execute(summaries.order_by(sql.summaries.c.upto_seq))
                ).all()
            for row in summary_rows:
                summary = sql.summary_record(row)
                yield {
                    "type": "summary",
                    "conversation_id": summary.conversation_id,
                    "upto_seq": summary.upto_seq,
                    "id": summary.id,
                    "content": summary.content,
                    "token_count": summary.token_count,
                    "metadata": sorted_json(summary.metadata),
                    "created_at": _time(summary.created_at),
                }
        after = page[-1].id


async def _with_attachments(
    service: ServiceBase, message: StoredMessage, owner: dict[str, str]
) -> StoredMessage:
    """The message with its parts' binary data loaded (one message's at a time, so memory
    stays bounded by the largest message, not the page)."""
    if not isinstance(message.content, tuple):
        return message
    media = (ImagePart, FilePart, AudioPart)
    digests = sorted(
        {p.attachment for p in message.content if isinstance(p, media) and p.attachment}
    )
    if not digests:
        return message
    params = {**owner, "digests": digests}
    async with service._read():
        found = dict((await service.session.execute(sql.ATTACHMENT_DATA, params)).all())
    content = tuple(
        replace(p, data=base64.b64encode(found[p.attachment]).decode("ascii"))
        if isinstance(p, media) and p.attachment in found
        else p
        for p in message.content
    )
    return replace(message, content=content)


def _message_record(message: StoredMessage) -> dict[str, Any]:
    content: Any = message.content
    if isinstance(content, tuple):
        # Parts keep their field order ("type" first); JSON inside them is sorted.
        content = [{k: sorted_json(v) for k, v in part_to_dict(p).items()} for p in content]
    return {
        "type": "message",
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "id": message.id,
        "role": message.role,
        "content": content,
        "tool_calls": [c.to_dict() for c in message.tool_calls] if message.tool_calls else None,
        "tool_name": message.tool_name,
        "tool_call_id": message.tool_call_id,
        "metadata": sorted_json(message.metadata),
        "key": message.key,
        "token_count": message.token_count,
        "created_at": _time(message.created_at),
    }


def dumps(record: dict[str, Any]) -> str:
    """One export line (without its newline)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def sorted_json(value: Any) -> Any:
    """JSON with every object's keys sorted (databases keep JSON objects in different orders)."""
    if isinstance(value, dict):
        return {k: sorted_json(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [sorted_json(v) for v in value]
    return value


def _time(at: datetime) -> str:
    return at.isoformat()
