"""content_parts: a message's content may be a list of typed parts, with binary attachments.

- ``messages.parts``: the parts, as JSON, when the content is not plain text (``content`` is
  then NULL). Existing messages keep their text and get NULL.
- ``attachments``: binary data the parts refer to, stored once per conversation by its
  SHA-256, keyed ``(conversation_id, sha256)`` and deleted with the conversation.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "content_parts"
down_revision: str | None = "baseline_0_1_0"
branch_labels = None
depends_on = None

# MySQL and MariaDB (never supported by 0.1.0, so this revision is their first too): wider
# types and binary, no-pad collation, as convodb._types explains.
_MYSQL = ("mysql", "mariadb")
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), *_MYSQL)
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
    with op.batch_alter_table("messages") as messages:
        messages.add_column(sa.Column("parts", JSON, nullable=True))
    op.create_table(
        "attachments",
        sa.Column(
            "conversation_id",
            sa.String(64),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("media_type", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("data", BLOB, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("attachments")
    with op.batch_alter_table("messages") as messages:
        messages.drop_column("parts")
