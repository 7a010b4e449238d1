"""Read the store's state with plain SQL, independent of the service under test."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from convodb import Database
from convodb._models import attachments, conversations, messages


@dataclass(frozen=True)
class State:
    conversations: int
    messages: int
    last_seq: int | None
    updated_at: datetime | None
    attachments: int
    """Attachment rows of all conversations."""


async def state(db: Database, conversation_id: str) -> State:
    """What is stored for one conversation, and how many rows the tables hold in all."""
    async with db.engine.connect() as conn:
        row = (
            await conn.execute(
                select(conversations.c.last_seq, conversations.c.updated_at).where(
                    conversations.c.id == conversation_id
                )
            )
        ).one_or_none()
        n_conversations = (
            await conn.execute(select(func.count()).select_from(conversations))
        ).scalar_one()
        n_messages = (
            await conn.execute(
                select(func.count())
                .select_from(messages)
                .where(messages.c.conversation_id == conversation_id)
            )
        ).scalar_one()
        n_attachments = (
            await conn.execute(select(func.count()).select_from(attachments))
        ).scalar_one()
    return State(
        attachments=n_attachments,
        conversations=n_conversations,
        messages=n_messages,
        last_seq=row.last_seq if row else None,
        updated_at=row.updated_at if row else None,
    )
