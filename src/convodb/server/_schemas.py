"""The JSON shapes of the API, as pydantic models: they document the wire format.

They check types and required fields only; every rule about values (sizes, ids, tool-call
pairing, keys) is the service's, so the HTTP API and the library can never disagree. Content
parts, which messages and agent input hold, have a module of their own (``_part_schemas``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

import convodb
from convodb import AgentInput, StoredConversation, StoredMessage, StoredSummary

# Not exported by convodb (yet): the largest seq, which the schema documents. With the part
# module's media types and serializer, the server's only imports of private modules.
from convodb._validation import MAX_SEQ

from ._part_schemas import ContentIn, PartOut, StrictModel, parts_out

__all__ = [
    "CONVERSATION_ID_PATTERN",
    "MAX_SEQ",
    "SHA256_PATTERN",
    "AgentInputOut",
    "AgentInputRequest",
    "AppendRequest",
    "AppendResponse",
    "ConversationCreate",
    "ConversationOut",
    "ConversationPage",
    "ConversationUpdate",
    "ErasureOut",
    "Health",
    "MessageIn",
    "MessageOut",
    "MessagePage",
    "ProblemOut",
    "SummaryCreate",
    "SummaryOut",
    "SummaryPage",
    "ToolCallModel",
    "agent_input_out",
    "conversation_out",
    "message_out",
    "summary_out",
]

# The store's rule, published in the OpenAPI schema; the service checks it either way.
CONVERSATION_ID_PATTERN = convodb.CONVERSATION_ID_PATTERN
"""The service's conversation id rule (``convodb._validation.check_conversation_id``)."""
SHA256_PATTERN = r"^[0-9a-f]{64}$"
"""The service's attachment digest rule (``convodb._validation.check_digest``)."""

_CONVERSATION_EXAMPLE: dict[str, JsonValue] = {
    "id": "0193a8c2-7d4e-7b1a-9c3f-2e5d8a1b4c6f",
    "user_id": "alice",
    "title": "Weather in Paris",
    "metadata": {"channel": "web"},
    "last_seq": 3,
    "message_count": 3,
    "created_at": "2025-01-01T12:00:00Z",
    "updated_at": "2025-01-01T12:00:05Z",
}
_TOOL_CALL_EXAMPLE: dict[str, JsonValue] = {
    "id": "call_1",
    "name": "get_weather",
    "arguments": '{"city": "Paris"}',
}
_MESSAGES_IN_EXAMPLE: list[JsonValue] = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [_TOOL_CALL_EXAMPLE]},
    {"role": "tool", "content": "18°C", "tool_call_id": "call_1", "tool_name": "get_weather"},
]
_PARTS_MESSAGE_IN_EXAMPLE: dict[str, JsonValue] = {
    "role": "user",
    "content": [
        {"type": "text", "text": "What is the weather like in this photo?"},
        {"type": "image", "url": "https://example.com/paris.jpg"},
    ],
}
_MESSAGE_EXAMPLE: dict[str, JsonValue] = {
    "id": "0193a8c2-7d4f-7e2b-8a1c-5f3e9d2b7a10",
    "conversation_id": _CONVERSATION_EXAMPLE["id"],
    "seq": 2,
    "role": "assistant",
    "content": None,
    "tool_calls": [_TOOL_CALL_EXAMPLE],
    "tool_name": None,
    "tool_call_id": None,
    "metadata": {},
    "key": "idem:turn-7f3a:1",
    "token_count": None,
    "created_at": "2025-01-01T12:00:05Z",
}
_PARTS_MESSAGE_EXAMPLE: dict[str, JsonValue] = {
    **_MESSAGE_EXAMPLE,
    "id": "0193a8c2-7d4f-7e2b-8a1c-5f3e9d2b7a11",
    "seq": 3,
    "role": "tool",
    "content": [
        {"type": "text", "text": "18°C, clear"},
        {
            "type": "image",
            "media_type": "image/png",
            "attachment": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "size": 48213,
            "width": 1024,
            "height": 768,
        },
    ],
    "tool_calls": None,
    "tool_name": "screenshot",
    "tool_call_id": "call_2",
    "key": None,
}
_SUMMARY_EXAMPLE: dict[str, JsonValue] = {
    "id": "0193a8c2-7d50-7c3d-9b2e-4a6f8c1d3e5b",
    "conversation_id": _CONVERSATION_EXAMPLE["id"],
    "upto_seq": 4,
    "content": "Alice asked about the weather in Paris.",
    "token_count": 12,
    "metadata": {},
    "created_at": "2025-01-01T12:10:00Z",
}


class ToolCallModel(StrictModel):
    """A function call requested by an assistant message."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_TOOL_CALL_EXAMPLE]})

    id: str = Field(description="The call id; the tool message answering it repeats it.")
    name: str = Field(description="The function name.")
    arguments: str = Field(description="The arguments as the model produced them (JSON text).")


class MessageIn(StrictModel):
    """A message to append."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [*_MESSAGES_IN_EXAMPLE, _PARTS_MESSAGE_IN_EXAMPLE]},
    )

    role: Literal["system", "user", "assistant", "tool"]
    content: ContentIn | None = Field(
        default=None,
        description="The text, or a list of content parts (each `type` below; binary data "
        "goes in `data`, base64). Required, except on an assistant message with tool_calls. "
        "NUL characters are rejected on every database.",
    )
    tool_calls: list[ToolCallModel] | None = Field(
        default=None, description="Assistant messages only: the calls the model requested."
    )
    tool_name: str | None = Field(default=None, description="Tool messages only: the function.")
    tool_call_id: str | None = Field(
        default=None, description="Tool messages only, required: the id of the call answered."
    )
    metadata: dict[str, Any] | None = Field(
        default=None, description="Any JSON object, stored and returned as is."
    )
    key: str | None = Field(
        default=None,
        description="Idempotency key, unique within the conversation: re-sending a message "
        "with a stored key returns the stored message. Not allowed with the Idempotency-Key "
        "header (which keys the whole batch) and never starting with 'idem:'.",
    )


class AppendRequest(StrictModel):
    """Messages to append, in order, atomically: all are stored or none."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"messages": _MESSAGES_IN_EXAMPLE},
                {"messages": [_PARTS_MESSAGE_IN_EXAMPLE]},
            ]
        },
    )

    # At least one: an empty append over HTTP is a client bug (a turn that lost its messages),
    # not a request to store nothing. The library's save_conversation_messages(..., []) stays
    # a no-op returning [].
    messages: list[MessageIn] = Field(min_length=1, description="One or more, in order.")


class MessageOut(BaseModel):
    """A stored message."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [_MESSAGE_EXAMPLE, _PARTS_MESSAGE_EXAMPLE]}
    )

    id: str
    conversation_id: str
    seq: int = Field(description="Position in the conversation: 1, 2, 3, ... without gaps.")
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[PartOut] | None = Field(
        description="The text, or the parts as stored: binary data as `attachment` (its "
        "digest), `size` and what convodb read from it, without `data`."
    )
    tool_calls: list[ToolCallModel] | None
    tool_name: str | None
    tool_call_id: str | None
    metadata: dict[str, Any]
    key: str | None
    token_count: int | None
    created_at: datetime


class AppendResponse(BaseModel):
    """The stored messages, in the order sent, with their ``seq`` and ``id``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"messages": [_MESSAGE_EXAMPLE]}]})

    messages: list[MessageOut]


class RemovedMessages(BaseModel):
    """The removed messages, oldest first, as they were stored (parts with their ``data``),
    so that a client can show or restore them. Empty when nothing matched."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"messages": [_MESSAGE_EXAMPLE]}]})

    messages: list[MessageOut]


class MessagePage(BaseModel):
    """One page of messages."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_MESSAGE_EXAMPLE], "next_cursor": None}]}
    )

    items: list[MessageOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")


class ConversationCreate(StrictModel):
    """A new conversation; its id is made by the server (a time-ordered UUID)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"title": "Weather in Paris", "metadata": {"a": 1}}]},
    )

    title: str | None = Field(default=None, description="Up to 1024 characters.")
    metadata: dict[str, Any] | None = Field(default=None, description="Any JSON object.")


class ConversationUpdate(StrictModel):
    """Fields to change; fields left out stay as they are."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"title": "Paris trip"}]}
    )

    title: str | None = Field(default=None, description="The new title; null clears it.")
    metadata: dict[str, Any] | None = Field(
        default=None, description="Replaces the metadata; null clears it."
    )


class ConversationOut(BaseModel):
    """A conversation, without its messages."""

    model_config = ConfigDict(json_schema_extra={"examples": [_CONVERSATION_EXAMPLE]})

    id: str
    user_id: str
    title: str | None
    metadata: dict[str, Any]
    last_seq: int = Field(
        description="The highest seq ever assigned in it; the next message gets the one after. "
        "Removing messages never lowers it, so a seq is never reused."
    )
    message_count: int = Field(description="How many messages it holds.")
    created_at: datetime
    updated_at: datetime = Field(description="Moves on every append, removal and update.")


class ErasureOut(BaseModel):
    """What ``DELETE /v1/me`` deleted, by kind."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "alice",
                    "conversations": 3,
                    "messages": 120,
                    "summaries": 1,
                    "attachments": 2,
                    "idempotency_keys": 40,
                    "api_keys": 1,
                }
            ]
        }
    )

    user_id: str
    conversations: int
    messages: int
    summaries: int
    attachments: int
    idempotency_keys: int = Field(description="Messages that carried an idempotency key.")
    api_keys: int = Field(description="API keys bound to the user (the request's own included).")


class ConversationPage(BaseModel):
    """One page of conversations, most recently active first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_CONVERSATION_EXAMPLE], "next_cursor": None}]}
    )

    items: list[ConversationOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")


class AgentInputRequest(StrictModel):
    """What to build the next model request from."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "format": "openai-chat",
                    "system_prompt": "Be brief.",
                    "user_message": "And tomorrow?",
                    "max_tokens": 8000,
                },
                {
                    "format": "anthropic",
                    "user_message": _PARTS_MESSAGE_IN_EXAMPLE["content"],
                    "max_tokens": 8000,
                },
            ]
        },
    )

    format: Literal["openai-chat", "openai-responses", "anthropic", "plain"] = Field(
        default="openai-chat", description="The model API whose input shape to return."
    )
    system_prompt: str | None = Field(default=None, description="Sent first, always.")
    user_message: ContentIn | None = Field(
        default=None,
        description="The new user turn, sent last, always; not stored. Text, or content parts "
        "as in a message (their `data` is sent, not stored).",
    )
    max_messages: int | None = Field(
        default=None, ge=1, description="At most this many history messages."
    )
    max_tokens: int | None = Field(
        default=None, ge=1, description="At most this many tokens in the whole window."
    )


class AgentInputOut(BaseModel):
    """The newest history that fits, as the keyword arguments of one model API's call.

    Forward `request` as it is; it is never anything else. The other fields describe it.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "format": "anthropic",
                    "request": {
                        "system": "Be brief.",
                        "messages": [
                            {"role": "user", "content": [{"type": "text", "text": "Hi!"}]},
                            {
                                "role": "assistant",
                                "content": [{"type": "text", "text": "Hello. How can I help?"}],
                            },
                            {
                                "role": "user",
                                "content": [{"type": "text", "text": "Weather in Paris?"}],
                            },
                        ],
                    },
                    "token_count": 42,
                    "dropped": 0,
                    "first_seq": 1,
                },
                {
                    "format": "openai-chat",
                    "request": {
                        "messages": [
                            {"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Weather in Paris?"},
                            {"role": "assistant", "content": "18°C and sunny."},
                            {"role": "user", "content": "And tomorrow?"},
                        ]
                    },
                    "token_count": 42,
                    "dropped": 0,
                    "first_seq": 1,
                },
            ]
        }
    )

    format: str = Field(description="The format asked for.")
    request: dict[str, Any] = Field(
        description="Exactly the keyword arguments of the API's call, to send as they are. "
        "`anthropic`: `messages`, and `system` when there is system text "
        "(`client.messages.create(model=..., max_tokens=..., **request)`); `openai-chat`: "
        "`messages` (`client.chat.completions.create(model=..., **request)`); "
        "`openai-responses`: `input` (`client.responses.create(model=..., **request)`); "
        "`plain`: `messages` (role and text only)."
    )
    token_count: int = Field(description="Tokens of the whole window, fixed parts included.")
    dropped: int = Field(description="Stored messages left out of the window.")
    first_seq: int | None = Field(description="seq of the first history message sent.")


class SummaryCreate(StrictModel):
    """A summary the caller made of messages 1..upto_seq; windows then start from it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"content": "Alice asked about the weather in Paris.", "upto_seq": 4}]
        },
    )

    content: str = Field(description="The summary text.")
    upto_seq: int = Field(ge=1, description="The last seq it covers.")
    metadata: dict[str, Any] | None = Field(default=None, description="Any JSON object.")


class SummaryOut(BaseModel):
    """A stored summary."""

    model_config = ConfigDict(json_schema_extra={"examples": [_SUMMARY_EXAMPLE]})

    id: str
    conversation_id: str
    upto_seq: int
    content: str
    token_count: int | None
    metadata: dict[str, Any]
    created_at: datetime


class SummaryPage(BaseModel):
    """One page of summaries, newest (highest `upto_seq`) first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_SUMMARY_EXAMPLE], "next_cursor": None}]}
    )

    items: list[SummaryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")


class Health(BaseModel):
    status: Literal["ok", "ready"]


class _FieldError(BaseModel):
    model_config = ConfigDict(title="FieldError")

    location: str
    message: str


class ProblemOut(BaseModel):
    """An RFC 9457 problem: ``type`` is stable per kind of error; ``detail`` says what to do."""

    model_config = ConfigDict(
        title="Problem",
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:convodb:problem:conversation-not-found",
                    "title": "Conversation not found",
                    "status": 404,
                    "detail": "Conversation not found: 'c1'",
                    "instance": "/v1/conversations/c1",
                }
            ]
        },
    )

    type: str = Field(description="urn:convodb:problem:<name>; see docs/http.md.")
    title: str
    status: int
    detail: str
    instance: str | None = None
    field: str | None = Field(default=None, description="Invalid input: where the bad value is.")
    limit: int | None = Field(default=None, description="Limit exceeded: the limit.")
    errors: list[_FieldError] | None = Field(
        default=None, description="Request not matching the schema: each mismatch."
    )


def conversation_out(c: StoredConversation) -> dict[str, Any]:
    return {
        "id": c.id,
        "user_id": c.user_id,
        "title": c.title,
        "metadata": c.metadata,
        "last_seq": c.last_seq,
        "message_count": c.message_count,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    }


def agent_input_out(a: AgentInput) -> dict[str, Any]:
    return {
        "format": a.format,
        "request": a.kwargs,
        "token_count": a.token_count,
        "dropped": a.dropped,
        "first_seq": a.first_seq,
    }


def summary_out(s: StoredSummary) -> dict[str, Any]:
    return {
        "id": s.id,
        "conversation_id": s.conversation_id,
        "upto_seq": s.upto_seq,
        "content": s.content,
        "token_count": s.token_count,
        "metadata": s.metadata,
        "created_at": s.created_at,
    }


def message_out(m: StoredMessage) -> dict[str, Any]:
    return {
        "id": m.id,
        "conversation_id": m.conversation_id,
        "seq": m.seq,
        "role": m.role,
        "content": (
            m.content if m.content is None or isinstance(m.content, str) else parts_out(m.content)
        ),
        "tool_calls": [c.to_dict() for c in m.tool_calls] if m.tool_calls else None,
        "tool_name": m.tool_name,
        "tool_call_id": m.tool_call_id,
        "metadata": m.metadata,
        "key": m.key,
        "token_count": m.token_count,
        "created_at": m.created_at,
    }
