"""langgraph_checkpoints: the tables of the LangGraph checkpoint saver.

A thread is a conversation: every table is keyed by ``conversation_id`` first and deleted
with its conversation (``ON DELETE CASCADE``). See ``convodb._models``.

- ``langgraph_checkpoints``: a thread's checkpoints, per namespace;
- ``langgraph_checkpoint_blobs``: channel values by version;
- ``langgraph_checkpoint_writes``: pending writes against a checkpoint;
- ``langgraph_message_copies``: messages the saver removed that older checkpoints list.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "langgraph_checkpoints"
down_revision: str | None = "message_removal"
branch_labels = None
depends_on = None

_MYSQL = ("mysql", "mariadb")
BLOB = sa.LargeBinary().with_variant(mysql.LONGBLOB(), *_MYSQL)
TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_nopad_bin",
}
JSON = (
    sa.JSON()
    .with_variant(postgresql.JSONB(), "postgresql")
    .with_variant(mysql.LONGTEXT(), *_MYSQL)  # MariaDB's JSON check refuses depth > 32
)


def _conversation_id() -> sa.Column[Any]:
    return sa.Column(
        "conversation_id",
        sa.String(64),
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    )


def upgrade() -> None:
    op.create_table(
        "langgraph_checkpoints",
        _conversation_id(),
        sa.Column("checkpoint_ns", sa.String(255), primary_key=True),
        sa.Column("checkpoint_id", sa.String(64), primary_key=True),
        sa.Column("parent_checkpoint_id", sa.String(64)),
        sa.Column("run_id", sa.String(255)),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("checkpoint", BLOB, nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "langgraph_checkpoint_blobs",
        _conversation_id(),
        sa.Column("checkpoint_ns", sa.String(255), primary_key=True),
        sa.Column("channel", sa.String(255), primary_key=True),
        sa.Column("version", sa.String(128), primary_key=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("blob", BLOB),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "langgraph_checkpoint_writes",
        _conversation_id(),
        sa.Column("checkpoint_ns", sa.String(255), primary_key=True),
        sa.Column("checkpoint_id", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.String(64), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("channel", sa.String(255), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("blob", BLOB),
        sa.Column("task_path", sa.Text, nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "langgraph_message_copies",
        _conversation_id(),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("blob", BLOB, nullable=False),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    for name in (
        "langgraph_message_copies",
        "langgraph_checkpoint_writes",
        "langgraph_checkpoint_blobs",
        "langgraph_checkpoints",
    ):
        op.drop_table(name)
