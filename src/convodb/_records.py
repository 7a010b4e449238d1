"""What the service returns: small frozen dataclasses, not ORM objects.

Building a validated SQLModel ``Message`` costs ~60 µs on this machine, a frozen slotted
dataclass ~3 µs by keyword (less positionally): for a 50-message history that is the
difference between 3 ms and 0.15 ms, more than the indexed query itself. The tables
(``convodb.Message``, ``convodb.Conversation``) remain for ORM users; the hot path returns
these records, which carry the same field names (``metadata`` instead of the table attribute
``metadata_``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar

from ._parts import Part, text_of

__all__ = [
    "MessageLike",
    "NewMessage",
    "Page",
    "Role",
    "StoredAttachment",
    "StoredConversation",
    "StoredMessage",
    "StoredSummary",
    "ToolCall",
    "builder",
]

Role = Literal["system", "user", "assistant", "tool"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call requested by an assistant message."""

    id: str
    """The call id the tool result answers with (``tool_call_id``)."""
    name: str
    """The function name."""
    arguments: str
    """The arguments exactly as the model produced them (usually a JSON string)."""

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True, slots=True, kw_only=True)
class NewMessage:
    """A message to append. Plain dicts with the same keys are accepted too."""

    role: Role
    content: str | Sequence[Part | Mapping[str, Any]] | None = None
    """Text, or a list of parts: part records such as :class:`~convodb.TextPart`, or dicts
    of the same shape."""
    tool_calls: Sequence[ToolCall | Mapping[str, Any]] | None = None
    """Assistant only: the calls the model requested."""
    tool_name: str | None = None
    """Tool only: the name of the function that produced this result."""
    tool_call_id: str | None = None
    """Tool only, required: the id of the call this message answers."""
    metadata: Mapping[str, Any] | None = None
    """Any JSON object; stored and returned as is."""
    key: str | None = None
    """Idempotency key, unique within the conversation: a retried append with the same key
    returns the stored message instead of storing it again."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A stored message, as history and appends return it."""

    id: str
    conversation_id: str
    seq: int
    """Position in the conversation: 1, 2, 3, ..., never reused. History is ordered by it; a
    removed message leaves a gap (see ``ConversationService.remove_messages``)."""
    role: Role
    content: str | tuple[Part, ...] | None
    """Text, or a tuple of parts. Parts whose binary data is stored as an attachment carry
    its digest (``attachment``) and no ``data``: history reads leave it out, agent-input
    windows load it, ``ConversationService.get_attachment`` returns it."""
    tool_calls: tuple[ToolCall, ...] | None
    tool_name: str | None
    tool_call_id: str | None
    metadata: dict[str, Any]
    key: str | None
    token_count: int | None
    created_at: datetime

    @property
    def text(self) -> str:
        """The text: ``content`` itself, or its text parts joined by newlines ("" for none)."""
        return text_of(self.content)


class MessageLike(Protocol):
    """What the formatters, token counters and windows read: a :class:`~convodb.StoredMessage`,
    a :class:`Turn` or a ``convodb.Message`` row. Public as ``convodb.formats.MessageLike``.

    ``content`` is text or a sequence of parts (``convodb`` part records, or dicts of the
    same shape, as a :class:`~convodb.NewMessage` may hold); ``tool_calls``,
    when the object has it, is a sequence of :class:`~convodb.ToolCall` or dicts.
    """

    @property
    def role(self) -> str: ...
    @property
    def content(self) -> str | Sequence[Part | Mapping[str, Any]] | None: ...
    @property
    def tool_call_id(self) -> str | None: ...
    @property
    def tool_name(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Turn:
    """A message that is not stored (a system prompt, a new user message), as the formats and
    token counters read messages."""

    role: str
    content: str | tuple[Part, ...] | None
    tool_call_id: str | None = None
    tool_name: str | None = None


@dataclass(frozen=True, slots=True)
class StoredConversation:
    """A stored conversation, without its messages."""

    id: str
    user_id: str
    title: str | None
    metadata: dict[str, Any]
    last_seq: int
    """The highest ``seq`` ever assigned in it (0 before the first message). It is also the
    newest message's seq, unless the newest messages were removed; a seq is never reused."""
    created_at: datetime
    updated_at: datetime
    """Moves on every append, removal and update: "most recently active" sorts by it."""
    message_count: int
    """How many messages it holds: ``last_seq`` minus the messages removed from it."""


@dataclass(frozen=True, slots=True)
class StoredSummary:
    """A summary standing in for the messages up to ``upto_seq`` in history windows."""

    id: str
    conversation_id: str
    upto_seq: int
    """The last ``seq`` the summary covers; windows continue with the messages after it."""
    content: str
    token_count: int | None
    metadata: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredAttachment:
    """Binary content of a conversation's parts, stored once per conversation by digest."""

    conversation_id: str
    sha256: str
    """SHA-256 of ``data``, hex: what a part's ``attachment`` holds."""
    media_type: str
    size: int
    """``len(data)``."""
    data: bytes
    created_at: datetime
    """When it was first stored in the conversation."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list, and where the next one starts."""

    items: list[T]
    next_cursor: str | None
    """Pass back as ``cursor`` for the next page; ``None`` when this page is the last."""


def builder(cls: type[T]) -> Callable[..., T]:
    """A positional constructor for the frozen slotted dataclass ``cls``, for rows read in bulk.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` to get
    past its own ``__setattr__``, which costs several times a plain slot store. The builder
    fills a mutable twin of ``cls`` (a slotted dataclass with the same fields, so the same
    slots in the same order: the same memory layout) and then gives the object its class.
    The result is an ordinary instance of ``cls``, frozen, equal to and indistinguishable
    from one made by ``cls(...)``; its fields must be passed in declaration order.
    """
    annotations = {f.name: f.type for f in fields(cls)}  # type: ignore[arg-type]
    twin: Any = dataclass(slots=True, eq=False, repr=False, match_args=False)(
        type(f"_{cls.__name__}Builder", (), {"__annotations__": annotations})
    )

    def build(*values: Any) -> T:
        instance = twin(*values)
        instance.__class__ = cls
        return instance  # type: ignore[no-any-return]

    return build
