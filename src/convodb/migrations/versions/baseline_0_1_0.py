"""baseline_0_1_0: the schema convodb 0.1.0 (commit 6b5bcac) created with ``create_all()``.

0.1.0 had no migrations and stamped nothing: a database it made is recognised by comparing
its tables with the ones below (``convodb.migrations.baseline_metadata``), adopted at this
revision and upgraded. Written out as 0.1.0's models defined them, names included; the
column types are those its types made in DDL (``DateTimeUTC`` is a timezone-aware
``DateTime``, ``JSONType`` is JSON with JSONB on PostgreSQL).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "baseline_0_1_0"
down_revision: str | None = None
branch_labels = None
depends_on = None

# MySQL and MariaDB (never supported by 0.1.0, so this revision is their first too): wider
# types and binary, no-pad collation, as convodb._types explains.
_MYSQL = ("mysql", "mariadb")
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), *_MYSQL)
TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), *_MYSQL)
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


def upgrade() -> None:
    create_tables(op)


def downgrade() -> None:
    for name in ("api_keys", "summaries", "messages", "conversations"):
        op.drop_table(name)


def create_tables(operations: Any) -> None:
    """Create 0.1.0's tables with ``operations.create_table`` (``alembic.op``, or a stand-in
    that collects them)."""
    operations.create_table(
        "conversations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("title", sa.String(1024)),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Index("ix_conversations_user_recent", "user_id", "updated_at", "id"),
        **TABLE_OPTIONS,
    )
    operations.create_table(
        "messages",
        sa.Column(
            "conversation_id",
            sa.String(64),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", TEXT),
        sa.Column("tool_calls", JSON),
        sa.Column("tool_name", sa.String(255)),
        sa.Column("tool_call_id", sa.String(255)),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("key", sa.String(255)),
        sa.Column("token_count", sa.Integer),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.UniqueConstraint("conversation_id", "key", name="uq_messages_conversation_key"),
        sa.CheckConstraint(
            "role IN ('system', 'user', 'assistant', 'tool')", name="ck_messages_role"
        ),
        **TABLE_OPTIONS,
    )
    operations.create_table(
        "summaries",
        sa.Column(
            "conversation_id",
            sa.String(64),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("upto_seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("content", TEXT, nullable=False),
        sa.Column("token_count", sa.Integer),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        **TABLE_OPTIONS,
    )
    operations.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(255)),
        sa.Column("name", sa.String(255)),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP),
        **TABLE_OPTIONS,
    )
