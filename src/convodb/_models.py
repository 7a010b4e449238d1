"""The schema: SQLModel tables, shaped for one server today and a Citus cluster tomorrow.

- Order is ``messages.seq``, a per-conversation sequence assigned in the append transaction
  from ``conversations.last_seq``; timestamps are informational only.
- ``messages`` is keyed by ``(conversation_id, seq)``: latest-N history is a backward range scan
  of that key, whose cost does not grow with the conversation or the table.
- Every unique constraint on ``messages`` leads with ``conversation_id``, so both tables can be
  distributed by conversation id and co-located: each hot-path statement routes to one shard.
- ``role`` is checked by the database too; there is no index on it (it would only slow writes).
- The schema changes only by migration (``convodb/migrations``): a change here comes with a
  revision that makes the same change, and ``tests/test_migrations.py`` proves the two equal.

The Python attribute for the JSON ``metadata`` column is ``metadata_``: SQLAlchemy reserves
``metadata`` on mapped classes for the table registry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from ._types import MYSQL_TABLE_OPTIONS, Blob, DateTimeUTC, JSONType, LongText, utcnow

__all__ = [
    "ROLES",
    "ApiKey",
    "Attachment",
    "Conversation",
    "Message",
    "Summary",
    "api_keys",
    "attachments",
    "checkpoint_blobs",
    "checkpoint_tables",
    "checkpoint_writes",
    "checkpoints",
    "conversations",
    "message_copies",
    "messages",
    "summaries",
    "tables",
]

ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
"""The message roles convodb stores."""

ID_LENGTH = 64
USER_ID_LENGTH = 255
TOOL_FIELD_LENGTH = 255
KEY_LENGTH = 255
TITLE_LENGTH = 1024
MEDIA_TYPE_LENGTH = 255
API_KEY_ID_LENGTH = 32  # a UUIDv7 as hex
API_KEY_NAME_LENGTH = 255


class Conversation(SQLModel, table=True):
    """A conversation: one user's ordered list of messages."""

    __tablename__: ClassVar[str] = "conversations"
    __table_args__ = (
        Index("ix_conversations_user_recent", "user_id", "updated_at", "id"),
        MYSQL_TABLE_OPTIONS,
    )

    id: str = Field(sa_column=Column(String(ID_LENGTH), primary_key=True))
    user_id: str = Field(sa_column=Column(String(USER_ID_LENGTH), nullable=False))
    title: str | None = Field(default=None, sa_column=Column(String(TITLE_LENGTH)))
    metadata_: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSONType, nullable=False)
    )
    last_seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    """The highest ``seq`` ever assigned in it (0 before the first message). Appends continue
    after it; removing messages never lowers it, so a ``seq`` is never reused."""
    removed_count: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default=text("0"))
    )
    """How many of its messages were removed: it holds ``last_seq - removed_count``. Zero
    means its seqs have no gaps."""
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTimeUTC, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTimeUTC, nullable=False)
    )


class Message(SQLModel, table=True):
    """One message of a conversation, at position ``seq`` (1, 2, 3, ...; a removed message
    leaves a gap, and its seq is never used again)."""

    __tablename__: ClassVar[str] = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "key", name="uq_messages_conversation_key"),
        CheckConstraint("role IN ('system', 'user', 'assistant', 'tool')", name="ck_messages_role"),
        MYSQL_TABLE_OPTIONS,
    )

    conversation_id: str = Field(
        sa_column=Column(
            String(ID_LENGTH),
            ForeignKey("conversations.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    id: str = Field(sa_column=Column(String(36), nullable=False))
    role: str = Field(sa_column=Column(String(16), nullable=False))
    content: str | None = Field(default=None, sa_column=Column(LongText))
    """The text; ``None`` when the content is a list of parts (``parts``) or absent."""
    parts: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSONType))
    """Content as a list of typed parts (text, image, file, ...), when it is not plain text."""
    tool_calls: list[dict[str, str]] | None = Field(default=None, sa_column=Column(JSONType))
    """Assistant tool calls as ``[{"id", "name", "arguments"}]``; ``arguments`` kept verbatim."""
    tool_name: str | None = Field(default=None, sa_column=Column(String(TOOL_FIELD_LENGTH)))
    tool_call_id: str | None = Field(default=None, sa_column=Column(String(TOOL_FIELD_LENGTH)))
    metadata_: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSONType, nullable=False)
    )
    key: str | None = Field(default=None, sa_column=Column(String(KEY_LENGTH)))
    """The client's idempotency key: a retried append with the same key stores nothing."""
    token_count: int | None = Field(default=None, sa_column=Column(Integer))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTimeUTC, nullable=False)
    )


class Summary(SQLModel, table=True):
    """A summary standing in for messages ``1..upto_seq`` in history windows (compaction).

    The messages it covers are kept: the full transcript stays readable and exportable. The
    newest summary (highest ``upto_seq``) is the one windows use.
    """

    __tablename__: ClassVar[str] = "summaries"
    __table_args__ = (MYSQL_TABLE_OPTIONS,)

    conversation_id: str = Field(
        sa_column=Column(
            String(ID_LENGTH),
            ForeignKey("conversations.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    upto_seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    """The last ``seq`` the summary covers."""
    id: str = Field(sa_column=Column(String(36), nullable=False))
    content: str = Field(sa_column=Column(LongText, nullable=False))
    token_count: int | None = Field(default=None, sa_column=Column(Integer))
    metadata_: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSONType, nullable=False)
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTimeUTC, nullable=False)
    )


class Attachment(SQLModel, table=True):
    """Binary content that message parts of a conversation refer to, stored once by digest.

    Keyed by ``(conversation_id, sha256)``, like every other key here leading with the
    conversation: attachments are distributed with their conversation, and deleted with it
    (``ON DELETE CASCADE``).
    """

    __tablename__: ClassVar[str] = "attachments"
    __table_args__ = (MYSQL_TABLE_OPTIONS,)

    conversation_id: str = Field(
        sa_column=Column(
            String(ID_LENGTH),
            ForeignKey("conversations.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    sha256: str = Field(sa_column=Column(String(64), primary_key=True))
    """SHA-256 of ``data``, hex."""
    media_type: str = Field(sa_column=Column(String(MEDIA_TYPE_LENGTH), nullable=False))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    """``len(data)`` in bytes."""
    data: bytes = Field(sa_column=Column(Blob, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTimeUTC, nullable=False)
    )


class ApiKey(SQLModel, table=True):
    """An API key of the HTTP service; the secret itself is never stored.

    Not one of :func:`tables`: ``create_all(api_keys=True)`` creates it (see ``convodb._keys``).
    """

    __tablename__: ClassVar[str] = "api_keys"
    __table_args__ = (MYSQL_TABLE_OPTIONS,)

    id: str = Field(sa_column=Column(String(API_KEY_ID_LENGTH), primary_key=True))
    user_id: str | None = Field(default=None, sa_column=Column(String(255)))
    """The user every request signed with the key acts as; ``None`` for a service key."""
    name: str | None = Field(default=None, sa_column=Column(String(API_KEY_NAME_LENGTH)))
    """What the key is for, shown by ``convodb keys list``."""
    secret_hash: str = Field(sa_column=Column(String(64), nullable=False))
    """SHA-256 of the secret, hex."""
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTimeUTC, nullable=False)
    )
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTimeUTC))


# The Core tables behind the models, for the hot path's statements.
conversations: Table = Conversation.__table__  # type: ignore[attr-defined]
messages: Table = Message.__table__  # type: ignore[attr-defined]
summaries: Table = Summary.__table__  # type: ignore[attr-defined]
attachments: Table = Attachment.__table__  # type: ignore[attr-defined]
api_keys: Table = ApiKey.__table__  # type: ignore[attr-defined]


# -- the LangGraph saver's tables (convodb.integrations.langgraph) ----------------------
#
# The LangGraph checkpoint saver's tables (``convodb.integrations.langgraph``).
#
# A LangGraph thread is a convodb conversation, so every table here is keyed by
# ``conversation_id`` first, with a foreign key to ``conversations`` (``ON DELETE CASCADE``):
# a Citus cluster distributes these rows with their conversation, and deleting the
# conversation deletes its checkpoints. The root namespace's ``messages`` list is not stored
# here but as the conversation's messages; a checkpoint's blob for it is a manifest of their
# ``seq`` numbers.
#
# - ``langgraph_checkpoints``: one row per checkpoint of a thread's namespace; ``checkpoint``
#   is the serialized checkpoint without its channel values, ``metadata`` its metadata.
# - ``langgraph_checkpoint_blobs``: a channel's value at a version, shared by the checkpoints
#   that have that version.
# - ``langgraph_checkpoint_writes``: the pending writes stored against a checkpoint.
# - ``langgraph_message_copies``: a serialized copy of each message the saver removed from
#   the conversation, by its ``seq`` (never reused), for the older checkpoints that list it.
#
# The names carry a ``langgraph_`` prefix: LangGraph's own PostgreSQL saver creates
# ``checkpoints``, ``checkpoint_blobs`` and ``checkpoint_writes``, and an application may use
# both in one database. Key columns are sized for MariaDB's 3072-byte index limit at four
# bytes a character.

_TABLE_OPTIONS: dict[str, Any] = dict(MYSQL_TABLE_OPTIONS)  # typed for Table(**...)
NAMESPACE_LENGTH = 255
CHECKPOINT_ID_LENGTH = 64
CHANNEL_LENGTH = 255
VERSION_LENGTH = 128
TASK_ID_LENGTH = 64
TYPE_LENGTH = 64
RUN_ID_LENGTH = 255


def _conversation_id() -> Column[str]:
    return Column(
        "conversation_id",
        String(ID_LENGTH),
        ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    )


checkpoints = Table(
    "langgraph_checkpoints",
    conversations.metadata,
    _conversation_id(),
    Column("checkpoint_ns", String(NAMESPACE_LENGTH), primary_key=True),
    Column("checkpoint_id", String(CHECKPOINT_ID_LENGTH), primary_key=True),
    Column("parent_checkpoint_id", String(CHECKPOINT_ID_LENGTH)),
    Column("run_id", String(RUN_ID_LENGTH)),
    Column("type", String(TYPE_LENGTH), nullable=False),
    Column("checkpoint", Blob, nullable=False),
    Column("metadata", JSONType, nullable=False),
    **_TABLE_OPTIONS,
)

checkpoint_blobs = Table(
    "langgraph_checkpoint_blobs",
    conversations.metadata,
    _conversation_id(),
    Column("checkpoint_ns", String(NAMESPACE_LENGTH), primary_key=True),
    Column("channel", String(CHANNEL_LENGTH), primary_key=True),
    Column("version", String(VERSION_LENGTH), primary_key=True),
    Column("type", String(TYPE_LENGTH), nullable=False),
    Column("blob", Blob),
    **_TABLE_OPTIONS,
)

checkpoint_writes = Table(
    "langgraph_checkpoint_writes",
    conversations.metadata,
    _conversation_id(),
    Column("checkpoint_ns", String(NAMESPACE_LENGTH), primary_key=True),
    Column("checkpoint_id", String(CHECKPOINT_ID_LENGTH), primary_key=True),
    Column("task_id", String(TASK_ID_LENGTH), primary_key=True),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("channel", String(CHANNEL_LENGTH), nullable=False),
    Column("type", String(TYPE_LENGTH), nullable=False),
    Column("blob", Blob),
    Column("task_path", Text, nullable=False),
    **_TABLE_OPTIONS,
)

message_copies = Table(
    "langgraph_message_copies",
    conversations.metadata,
    _conversation_id(),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("type", String(TYPE_LENGTH), nullable=False),
    Column("blob", Blob, nullable=False),
    **_TABLE_OPTIONS,
)


def checkpoint_tables() -> list[Table]:
    """The saver's tables in creation order (each after ``conversations``)."""
    return [checkpoints, checkpoint_blobs, checkpoint_writes, message_copies]


def tables(*, with_api_keys: bool = False) -> list[Table]:
    """convodb's tables in creation order (not the rest of ``SQLModel.metadata``): the
    library's, and the HTTP service's ``api_keys`` when asked for."""
    library = [conversations, messages, summaries, attachments, *checkpoint_tables()]
    return [*library, api_keys] if with_api_keys else library
