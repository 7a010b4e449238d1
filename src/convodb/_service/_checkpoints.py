"""The LangGraph saver's checkpoint tables (``convodb._models``): their SQL, and nothing else,
below the saver (``convodb.integrations.langgraph``), which translates and imports no SQL.

Every statement runs on the caller's session, in the caller's transaction, and is limited
to conversations of the given user by the statement itself (``_owned``): a thread of
another user reads as missing and is never written. Upserts are a DELETE and an INSERT in
one transaction, which every database runs the same way. The messages of a conversation
are never touched here: the saver stores them through ``ConversationService``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, delete, func, insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from .._models import (
    checkpoint_blobs,
    checkpoint_writes,
    checkpoints,
    conversations,
    message_copies,
)

__all__ = [
    "BlobRow",
    "CheckpointRow",
    "WriteRow",
    "blob_keys",
    "copies",
    "delete_checkpoints",
    "delete_thread_rows",
    "delete_unreferenced",
    "insert_rows",
    "latest_per_namespace",
    "load_blobs",
    "load_writes",
    "manifest_blobs",
    "put_blobs",
    "put_checkpoint",
    "put_writes",
    "remaining_checkpoints",
    "runs_checkpoints",
    "save_copies",
    "select_checkpoints",
    "thread_rows",
]

_BATCH = 500  # keys per IN (...) list


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    conversation_id: str
    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    type: str
    checkpoint: bytes
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BlobRow:
    checkpoint_ns: str
    channel: str
    version: str
    type: str
    blob: bytes | None


@dataclass(frozen=True, slots=True)
class WriteRow:
    checkpoint_ns: str
    checkpoint_id: str
    task_id: str
    idx: int
    channel: str
    type: str
    blob: bytes | None
    task_path: str


def _owned(table: Table, cid: str, uid: str) -> ColumnElement[bool]:
    """Rows of conversation ``cid`` when it is ``uid``'s, checked in the same statement."""
    mine = select(conversations.c.id).where(
        conversations.c.id == cid, conversations.c.user_id == uid
    )
    return and_(table.c.conversation_id == cid, table.c.conversation_id.in_(mine))


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _BATCH):
        yield items[start : start + _BATCH]


# -- writing ----------------------------------------------------------------------------------


async def put_checkpoint(
    session: AsyncSession,
    cid: str,
    *,
    checkpoint_ns: str,
    checkpoint_id: str,
    parent_checkpoint_id: str | None,
    run_id: str | None,
    type_: str,
    checkpoint: bytes,
    metadata: dict[str, Any],
) -> None:
    t = checkpoints.c
    await session.execute(
        delete(checkpoints).where(
            t.conversation_id == cid,
            t.checkpoint_ns == checkpoint_ns,
            t.checkpoint_id == checkpoint_id,
        )
    )
    await session.execute(
        insert(checkpoints).values(
            conversation_id=cid,
            checkpoint_ns=checkpoint_ns,
            checkpoint_id=checkpoint_id,
            parent_checkpoint_id=parent_checkpoint_id,
            run_id=run_id,
            type=type_,
            checkpoint=checkpoint,
            metadata=metadata,
        )
    )


async def put_blobs(session: AsyncSession, cid: str, rows: Sequence[BlobRow]) -> None:
    if not rows:
        return
    t = checkpoint_blobs.c
    keys = [(r.checkpoint_ns, r.channel, r.version) for r in rows]
    for chunk in _chunks(keys):
        await session.execute(
            delete(checkpoint_blobs).where(
                t.conversation_id == cid,
                tuple_(t.checkpoint_ns, t.channel, t.version).in_(chunk),
            )
        )
    await session.execute(
        insert(checkpoint_blobs),
        [
            {
                "conversation_id": cid,
                "checkpoint_ns": r.checkpoint_ns,
                "channel": r.channel,
                "version": r.version,
                "type": r.type,
                "blob": r.blob,
            }
            for r in rows
        ],
    )


async def put_writes(session: AsyncSession, cid: str, rows: Sequence[WriteRow]) -> None:
    """Store writes of one task against one checkpoint: a write whose ``idx`` is stored
    already is kept as it is, except the special channels' (negative ``idx``), which
    replace theirs (LangGraph's ``WRITES_IDX_MAP`` rule)."""
    if not rows:
        return
    t = checkpoint_writes.c
    first = rows[0]
    where = and_(
        t.conversation_id == cid,
        t.checkpoint_ns == first.checkpoint_ns,
        t.checkpoint_id == first.checkpoint_id,
        t.task_id == first.task_id,
    )
    replaced = [r.idx for r in rows if r.idx < 0]
    if replaced:
        await session.execute(delete(checkpoint_writes).where(where, t.idx.in_(replaced)))
    stored = set((await session.execute(select(t.idx).where(where))).scalars())
    new = [r for r in rows if r.idx not in stored]
    if new:
        await session.execute(
            insert(checkpoint_writes),
            [
                {
                    "conversation_id": cid,
                    "checkpoint_ns": r.checkpoint_ns,
                    "checkpoint_id": r.checkpoint_id,
                    "task_id": r.task_id,
                    "idx": r.idx,
                    "channel": r.channel,
                    "type": r.type,
                    "blob": r.blob,
                    "task_path": r.task_path,
                }
                for r in new
            ],
        )


async def save_copies(
    session: AsyncSession, cid: str, rows: Sequence[tuple[int, str, bytes]]
) -> None:
    """Keep ``(seq, type, blob)`` copies of removed messages (a seq is never reused, so a
    copy stored already is the same message)."""
    if not rows:
        return
    t = message_copies.c
    stored: set[int] = set()
    for chunk in _chunks([seq for seq, _, _ in rows]):
        result = await session.execute(
            select(t.seq).where(t.conversation_id == cid, t.seq.in_(chunk))
        )
        stored.update(result.scalars())
    new = [
        {"conversation_id": cid, "seq": s, "type": ty, "blob": b}
        for s, ty, b in rows
        if s not in stored
    ]
    if new:
        await session.execute(insert(message_copies), new)


# -- reading ----------------------------------------------------------------------------------


def _checkpoint_columns() -> list[Any]:
    t = checkpoints.c
    return [
        t.conversation_id,
        conversations.c["metadata"],
        t.checkpoint_ns,
        t.checkpoint_id,
        t.parent_checkpoint_id,
        t.type,
        t.checkpoint,
        t.metadata,
    ]


def _checkpoint_row(row: Sequence[Any], thread_key: str) -> CheckpointRow:
    cid, conversation_metadata, ns, checkpoint_id, parent, type_, blob, metadata = row
    thread_id = (conversation_metadata or {}).get(thread_key, {}).get("thread_id", "")
    return CheckpointRow(cid, thread_id, ns, checkpoint_id, parent, type_, bytes(blob), metadata)


async def select_checkpoints(
    session: AsyncSession,
    uid: str,
    *,
    thread_key: str,
    cid: str | None,
    checkpoint_ns: str | None = None,
    checkpoint_id: str | None = None,
    before: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[CheckpointRow]:
    """The user's checkpoints, newest first within each thread and namespace; of one
    conversation (``cid``), or of all the user's conversations (``None``)."""
    t = checkpoints.c
    statement = (
        select(*_checkpoint_columns())
        .join(conversations, conversations.c.id == t.conversation_id)
        .where(conversations.c.user_id == uid)
    )
    if cid is not None:
        statement = statement.where(t.conversation_id == cid)
    if checkpoint_ns is not None:
        statement = statement.where(t.checkpoint_ns == checkpoint_ns)
    if checkpoint_id is not None:
        statement = statement.where(t.checkpoint_id == checkpoint_id)
    if before is not None:
        statement = statement.where(t.checkpoint_id < before)
    statement = statement.order_by(t.conversation_id, t.checkpoint_ns, t.checkpoint_id.desc())
    if limit is not None:
        statement = statement.limit(limit).offset(offset)
    rows = (await session.execute(statement)).all()
    return [_checkpoint_row(row, thread_key) for row in rows]


async def load_blobs(
    session: AsyncSession, cid: str, keys: Sequence[tuple[str, str, str]]
) -> dict[tuple[str, str, str], BlobRow]:
    """Blobs by ``(checkpoint_ns, channel, version)``."""
    t = checkpoint_blobs.c
    found: dict[tuple[str, str, str], BlobRow] = {}
    for chunk in _chunks(sorted(set(keys))):
        result = await session.execute(
            select(t.checkpoint_ns, t.channel, t.version, t.type, t.blob).where(
                t.conversation_id == cid, tuple_(t.checkpoint_ns, t.channel, t.version).in_(chunk)
            )
        )
        for ns, channel, version, type_, blob in result:
            found[(ns, channel, version)] = BlobRow(
                ns, channel, version, type_, None if blob is None else bytes(blob)
            )
    return found


async def load_writes(
    session: AsyncSession, cid: str, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[WriteRow]]:
    """Writes by ``(checkpoint_ns, checkpoint_id)``, in LangGraph's ``writes_sort_key``
    order: ``(task_path, task_id, idx)``."""
    t = checkpoint_writes.c
    found: dict[tuple[str, str], list[WriteRow]] = {}
    for chunk in _chunks(sorted(set(keys))):
        result = await session.execute(
            select(
                t.checkpoint_ns,
                t.checkpoint_id,
                t.task_id,
                t.idx,
                t.channel,
                t.type,
                t.blob,
                t.task_path,
            ).where(t.conversation_id == cid, tuple_(t.checkpoint_ns, t.checkpoint_id).in_(chunk))
        )
        for ns, checkpoint_id, task_id, idx, channel, type_, blob, task_path in result:
            row = WriteRow(
                ns,
                checkpoint_id,
                task_id,
                idx,
                channel,
                type_,
                None if blob is None else bytes(blob),
                task_path,
            )
            found.setdefault((ns, checkpoint_id), []).append(row)
    for rows in found.values():
        rows.sort(key=lambda r: (r.task_path, r.task_id, r.idx))
    return found


async def copies(
    session: AsyncSession, cid: str, seqs: Sequence[int]
) -> dict[int, tuple[str, bytes]]:
    t = message_copies.c
    found: dict[int, tuple[str, bytes]] = {}
    for chunk in _chunks(sorted(set(seqs))):
        result = await session.execute(
            select(t.seq, t.type, t.blob).where(t.conversation_id == cid, t.seq.in_(chunk))
        )
        for seq, type_, blob in result:
            found[int(seq)] = (type_, bytes(blob))
    return found


async def thread_rows(
    session: AsyncSession, cid: str, uid: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Every row of the user's thread: ``(checkpoints, blobs, writes, copies)``, as dicts
    without ``conversation_id``."""
    found = []
    for table in (checkpoints, checkpoint_blobs, checkpoint_writes, message_copies):
        result = await session.execute(select(table).where(_owned(table, cid, uid)))
        found.append(
            [{k: v for k, v in row._mapping.items() if k != "conversation_id"} for row in result]
        )
    return found[0], found[1], found[2], found[3]


async def insert_rows(
    session: AsyncSession, cid: str, table: Table, rows: Sequence[dict[str, Any]]
) -> None:
    for chunk in _chunks(rows):
        await session.execute(insert(table), [{**row, "conversation_id": cid} for row in chunk])


# -- deleting ---------------------------------------------------------------------------------


async def delete_thread_rows(session: AsyncSession, cid: str, uid: str) -> None:
    """Delete every checkpoint table row of the user's conversation."""
    for table in (checkpoint_writes, checkpoint_blobs, message_copies, checkpoints):
        await session.execute(delete(table).where(_owned(table, cid, uid)))


async def runs_checkpoints(
    session: AsyncSession, uid: str, run_ids: Sequence[str]
) -> list[tuple[str, str, str]]:
    """``(conversation_id, checkpoint_ns, checkpoint_id)`` of the user's checkpoints whose
    metadata names one of the runs."""
    t = checkpoints.c
    found: list[tuple[str, str, str]] = []
    for chunk in _chunks(sorted(set(run_ids))):
        result = await session.execute(
            select(t.conversation_id, t.checkpoint_ns, t.checkpoint_id)
            .join(conversations, conversations.c.id == t.conversation_id)
            .where(conversations.c.user_id == uid, t.run_id.in_(chunk))
        )
        found.extend((cid, ns, ckpt) for cid, ns, ckpt in result)
    return found


async def latest_per_namespace(session: AsyncSession, cid: str, uid: str) -> dict[str, str]:
    """The newest checkpoint id of each namespace of the user's thread."""
    t = checkpoints.c
    result = await session.execute(
        select(t.checkpoint_ns, func.max(t.checkpoint_id))
        .where(_owned(checkpoints, cid, uid))
        .group_by(t.checkpoint_ns)
    )
    return {ns: checkpoint_id for ns, checkpoint_id in result}


async def delete_checkpoints(
    session: AsyncSession, cid: str, keys: Sequence[tuple[str, str]]
) -> None:
    """Delete checkpoints ``(checkpoint_ns, checkpoint_id)`` of a conversation, with their
    writes (blobs and copies are left to :func:`delete_unreferenced`)."""
    for table in (checkpoint_writes, checkpoints):
        t = table.c
        for chunk in _chunks(sorted(set(keys))):
            await session.execute(
                delete(table).where(
                    t.conversation_id == cid, tuple_(t.checkpoint_ns, t.checkpoint_id).in_(chunk)
                )
            )


async def remaining_checkpoints(session: AsyncSession, cid: str) -> list[tuple[str, str, bytes]]:
    """``(checkpoint_ns, type, checkpoint)`` of every checkpoint of a conversation."""
    t = checkpoints.c
    result = await session.execute(
        select(t.checkpoint_ns, t.type, t.checkpoint).where(t.conversation_id == cid)
    )
    return [(ns, type_, bytes(blob)) for ns, type_, blob in result]


async def blob_keys(session: AsyncSession, cid: str) -> list[BlobRow]:
    """Every blob of a conversation; ``blob`` is loaded only for manifests (``type``
    given by the caller's filter below)."""
    t = checkpoint_blobs.c
    result = await session.execute(
        select(t.checkpoint_ns, t.channel, t.version, t.type).where(t.conversation_id == cid)
    )
    return [BlobRow(ns, ch, v, ty, None) for ns, ch, v, ty in result]


async def delete_unreferenced(
    session: AsyncSession,
    cid: str,
    *,
    blobs: Sequence[tuple[str, str, str]],
    copies_kept: set[int] | None,
) -> None:
    """Delete the given blobs, and the message copies whose seq is not in ``copies_kept``
    (all of them for an empty set; none for ``None``)."""
    t = checkpoint_blobs.c
    for chunk in _chunks(sorted(set(blobs))):
        await session.execute(
            delete(checkpoint_blobs).where(
                t.conversation_id == cid, tuple_(t.checkpoint_ns, t.channel, t.version).in_(chunk)
            )
        )
    if copies_kept is None:
        return
    c = message_copies.c
    stored = (await session.execute(select(c.seq).where(c.conversation_id == cid))).scalars()
    unreferenced = sorted(int(seq) for seq in stored if int(seq) not in copies_kept)
    for chunk in _chunks(unreferenced):
        await session.execute(
            delete(message_copies).where(c.conversation_id == cid, c.seq.in_(chunk))
        )


async def manifest_blobs(session: AsyncSession, cid: str, manifest_type: str) -> list[bytes]:
    t = checkpoint_blobs.c
    result = await session.execute(
        select(t.blob).where(t.conversation_id == cid, t.type == manifest_type)
    )
    return [bytes(blob) for blob in result.scalars() if blob is not None]
