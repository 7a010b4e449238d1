"""message_removal: messages can be removed from a conversation, leaving gaps in ``seq``.

- ``conversations.removed_count``: how many of the conversation's messages were removed, so
  that it holds ``last_seq - removed_count`` and zero still means "no gaps" (the windows'
  exact, free count). Existing conversations have removed nothing: 0.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "message_removal"
down_revision: str | None = "content_parts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as conversations:
        conversations.add_column(
            sa.Column("removed_count", sa.BigInteger, nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("conversations") as conversations:
        conversations.drop_column("removed_count")
