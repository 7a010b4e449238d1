"""The hot path's SQL, built once, and the mapping of its rows to records.

Statements are module constants with named bind parameters, so SQLAlchemy compiles each once
and caches it. Every statement that reads a conversation's rows carries the ownership
predicate (``OWNED``: ``id = :cid AND user_id = :uid``) itself.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, func, literal, select, update

from ._models import api_keys, attachments, conversations, messages, summaries
from ._parts import part_from_dict
from ._records import StoredConversation, StoredMessage, StoredSummary, ToolCall, builder

__all__ = [
    "AFTER",
    "AT_SEQS",
    "ATTACHMENT",
    "ATTACHMENT_DATA",
    "BEFORE",
    "BUMP_SEQ",
    "CONV_COLUMNS",
    "COUNT_AFTER",
    "FLOOR",
    "HEAD",
    "INSERT_MESSAGES",
    "INSERT_SUMMARY",
    "KEY_LIVE",
    "LATEST",
    "LATEST_SUMMARY",
    "LOCK",
    "MESSAGE_AT",
    "MSG_COLUMNS",
    "OWNED",
    "OWNED_EXISTS",
    "SELECT_CONVERSATION",
    "SUMMARIES_BEFORE",
    "SUMMARY_AT",
    "SUM_COLUMNS",
    "WINDOW_START",
    "attachments",
    "conversation_record",
    "conversations",
    "keyed",
    "message_record",
    "messages",
    "new_message",
    "summaries",
    "summary_record",
]

CONV_COLUMNS = (
    conversations.c.id,
    conversations.c.user_id,
    conversations.c.title,
    conversations.c["metadata"],
    conversations.c.last_seq,
    conversations.c.created_at,
    conversations.c.updated_at,
    conversations.c.removed_count,
)
MSG_COLUMNS = (
    messages.c.id,
    messages.c.conversation_id,
    messages.c.seq,
    messages.c.role,
    messages.c.content,
    messages.c.tool_calls,
    messages.c.tool_name,
    messages.c.tool_call_id,
    messages.c["metadata"],
    messages.c.key,
    messages.c.token_count,
    messages.c.created_at,
    messages.c.parts,  # last: the columns before it keep their positions
)

# Statements are built once; SQLAlchemy caches their compiled form.
_Statement = TypeVar("_Statement")
# The API key a service acts under (``:key``) is live: not revoked, not deleted.
KEY_LIVE = select(api_keys.c.id).where(
    api_keys.c.id == bindparam("key"), api_keys.c.revoked_at.is_(None)
)
_KEY_LIVE_EXISTS = KEY_LIVE.exists()


@functools.cache
def keyed(statement: _Statement) -> _Statement:
    """``statement`` that also requires ``KEY_LIVE``: one statement checks ownership and the
    caller's key. Built once per statement, so its compiled form is cached like the others."""
    return statement.where(_KEY_LIVE_EXISTS)  # type: ignore[attr-defined, no-any-return]


OWNED = and_(conversations.c.id == bindparam("cid"), conversations.c.user_id == bindparam("uid"))
OWNED_EXISTS = select(literal(1)).where(OWNED).exists()
SELECT_CONVERSATION = select(*CONV_COLUMNS).where(OWNED)
BUMP_SEQ = (
    update(conversations)
    .where(OWNED)
    .values(last_seq=conversations.c.last_seq + bindparam("n"), updated_at=bindparam("now"))
    .returning(conversations.c.last_seq)
)
# A no-op write: takes the conversation's row lock (PostgreSQL) or the write lock (SQLite) and
# proves ownership, without moving anything.
LOCK = (
    update(conversations)
    .where(OWNED)
    .values(last_seq=conversations.c.last_seq)
    .returning(conversations.c.last_seq)
)
LATEST = (
    select(*MSG_COLUMNS)
    .where(messages.c.conversation_id == bindparam("cid"), OWNED_EXISTS)
    .order_by(messages.c.seq.desc())
    .limit(bindparam("n"))
)
AFTER = (
    select(*MSG_COLUMNS)
    .where(
        messages.c.conversation_id == bindparam("cid"),
        messages.c.seq > bindparam("seq"),
        OWNED_EXISTS,
    )
    .order_by(messages.c.seq.asc())
    .limit(bindparam("n"))
)
# One message of an owned conversation, by its seq (the primary key's two columns).
MESSAGE_AT = select(*MSG_COLUMNS).where(
    messages.c.conversation_id == bindparam("cid"),
    messages.c.seq == bindparam("seq"),
    OWNED_EXISTS,
)
INSERT_MESSAGES = messages.insert()

SUM_COLUMNS = (
    summaries.c.id,
    summaries.c.conversation_id,
    summaries.c.upto_seq,
    summaries.c.content,
    summaries.c.token_count,
    summaries.c["metadata"],
    summaries.c.created_at,
)
# The newest summary of an owned conversation.
LATEST_SUMMARY = (
    select(*SUM_COLUMNS)
    .where(summaries.c.conversation_id == bindparam("cid"), OWNED_EXISTS)
    .order_by(summaries.c.upto_seq.desc())
    .limit(1)
)
# Newest-first pages of an owned conversation's summaries, below ``seq``: upto_seq is unique in
# a conversation (the primary key's second column), so it alone is the cursor's position.
SUMMARIES_BEFORE = (
    select(*SUM_COLUMNS)
    .where(
        summaries.c.conversation_id == bindparam("cid"),
        summaries.c.upto_seq < bindparam("seq"),
        OWNED_EXISTS,
    )
    .order_by(summaries.c.upto_seq.desc())
    .limit(bindparam("n"))
)
# Newest-first pages below ``seq`` and above ``floor`` (0, or the newest summary's upto_seq).
BEFORE = (
    select(*MSG_COLUMNS)
    .where(
        messages.c.conversation_id == bindparam("cid"),
        messages.c.seq > bindparam("floor"),
        messages.c.seq < bindparam("seq"),
        OWNED_EXISTS,
    )
    .order_by(messages.c.seq.desc())
    .limit(bindparam("n"))
)
# Messages of an owned conversation by seq (``seqs`` expands to a list).
AT_SEQS = (
    select(*MSG_COLUMNS)
    .where(
        messages.c.conversation_id == bindparam("cid"),
        messages.c.seq.in_(bindparam("seqs", expanding=True)),
        OWNED_EXISTS,
    )
    .order_by(messages.c.seq)
)
INSERT_SUMMARY = summaries.insert()
# An owned conversation's last_seq and its newest summary (NULLs when it has none), in one
# statement: what a window or a compaction needs before reading messages.
HEAD = (
    select(
        conversations.c.last_seq,
        summaries.c.upto_seq,
        summaries.c.content,
        summaries.c.id,
        summaries.c.created_at,
        conversations.c.removed_count,
    )
    .select_from(
        conversations.outerjoin(summaries, summaries.c.conversation_id == conversations.c.id)
    )
    .where(OWNED)
    .order_by(summaries.c.upto_seq.desc())
    .limit(1)
)


# The newest summary's upto_seq, 0 without one: where a window's history starts.
FLOOR = (
    select(func.coalesce(func.max(summaries.c.upto_seq), 0))
    .where(summaries.c.conversation_id == bindparam("cid"))
    .scalar_subquery()
)
# A window's first page, newest first, with what HEAD would say in three more columns (the
# conversation's last_seq, removed_count and FLOOR): one statement where HEAD and BEFORE took
# two. No rows: the conversation is missing, not the user's, or has no message after its
# summary.
WINDOW_START = (
    select(*MSG_COLUMNS, conversations.c.last_seq, conversations.c.removed_count, FLOOR)
    .join_from(messages, conversations, conversations.c.id == messages.c.conversation_id)
    .where(messages.c.conversation_id == bindparam("cid"), OWNED, messages.c.seq > FLOOR)
    .order_by(messages.c.seq.desc())
    .limit(bindparam("n"))
)
# How many messages an owned conversation holds after ``floor``: a window's count of the
# history it left out, where removals left gaps (without them, ``last_seq - floor``).
COUNT_AFTER = select(func.count()).where(
    messages.c.conversation_id == bindparam("cid"),
    messages.c.seq > bindparam("floor"),
    OWNED_EXISTS,
)
# The summary a window starts from (upto_seq = FLOOR, as read with WINDOW_START).
SUMMARY_AT = select(summaries.c.content).where(
    summaries.c.conversation_id == bindparam("cid"),
    summaries.c.upto_seq == bindparam("floor"),
    OWNED_EXISTS,
)


# Attachments of an owned conversation: one by digest (with its metadata), and the data of
# several (``digests`` expands to a list) for a window's parts.
ATTACHMENT = select(
    attachments.c.sha256,
    attachments.c.media_type,
    attachments.c.size,
    attachments.c.data,
    attachments.c.created_at,
).where(
    attachments.c.conversation_id == bindparam("cid"),
    attachments.c.sha256 == bindparam("sha256"),
    OWNED_EXISTS,
)
ATTACHMENT_DATA = select(attachments.c.sha256, attachments.c.data).where(
    attachments.c.conversation_id == bindparam("cid"),
    attachments.c.sha256.in_(bindparam("digests", expanding=True)),
    OWNED_EXISTS,
)


def conversation_record(row: Sequence[Any]) -> StoredConversation:
    id_, uid, title, metadata, last_seq, created, updated, removed = row
    return StoredConversation(
        id_, uid, title, metadata, int(last_seq), created, updated, int(last_seq - removed)
    )


new_message = builder(StoredMessage)
"""``StoredMessage(...)`` by position, for many at once."""
_new_call = builder(ToolCall)


def message_record(row: Sequence[Any]) -> StoredMessage:
    """The record of a row of ``MSG_COLUMNS`` (and any columns after them)."""
    tool_calls, parts = row[5], row[12]
    return new_message(
        row[0],  # id
        row[1],  # conversation_id
        row[2],  # seq
        row[3],  # role
        row[4] if parts is None else tuple(map(part_from_dict, parts)),  # content
        tuple([_new_call(c["id"], c["name"], c["arguments"]) for c in tool_calls])
        if tool_calls
        else None,
        row[6],  # tool_name
        row[7],  # tool_call_id
        row[8],  # metadata
        row[9],  # key
        row[10],  # token_count
        row[11],  # created_at
    )


def summary_record(row: Sequence[Any]) -> StoredSummary:
    return StoredSummary(*row)
