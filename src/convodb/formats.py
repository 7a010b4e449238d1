"""Stored messages in the shapes model APIs accept. Pure functions: no I/O.

``build_message_array`` and ``message_to_dict`` are the seed's helpers, fixed: the seed
dropped ``tool_calls`` and ``tool_call_id``, which made its arrays invalid input for the
OpenAI Chat Completions API as soon as a tool was used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from ._records import ToolCall

__all__ = ["MessageLike", "build_message_array", "message_to_dict", "to_openai_chat"]


class MessageLike(Protocol):
    """What the formatters read: a :class:`~convodb.StoredMessage` or a ``convodb.Message`` row."""

    @property
    def role(self) -> str: ...
    @property
    def content(self) -> str | None: ...
    @property
    def tool_call_id(self) -> str | None: ...
    @property
    def tool_name(self) -> str | None: ...


def _tool_calls(message: MessageLike) -> list[dict[str, str]]:
    calls: Iterable[ToolCall | Mapping[str, str]] = getattr(message, "tool_calls", None) or ()
    return [c.to_dict() if isinstance(c, ToolCall) else dict(c) for c in calls]


def to_openai_chat(message: MessageLike) -> dict[str, Any]:
    """One message as an OpenAI Chat Completions message param."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    calls = _tool_calls(message)
    if calls:
        out["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in calls
        ]
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id
    return out


def build_message_array(
    db_messages: Iterable[MessageLike],
    user_message: str | None,
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """Stored messages as an OpenAI Chat Completions ``messages`` array.

    ```python
    history = await service.get_conversation_history(cid, user_id)
    messages = build_message_array(history, "What's the weather?", system_prompt="Be brief.")
    ```

    Args:
        db_messages: the history, oldest first (as ``get_conversation_history`` returns it).
        user_message: the new user turn, appended last; ``None`` to add none.
        system_prompt: put first as a system message, when given.

    Returns:
        ``{"role", "content"}`` dicts, with ``tool_calls`` on assistant messages that made
        calls and ``tool_call_id`` on tool results.
    """
    array: list[dict[str, Any]] = []
    if system_prompt is not None:
        array.append({"role": "system", "content": system_prompt})
    array.extend(to_openai_chat(m) for m in db_messages)
    if user_message is not None:
        array.append({"role": "user", "content": user_message})
    return array


def message_to_dict(message: MessageLike) -> dict[str, Any]:
    """A stored message as a JSON-ready dict (timestamps in ISO 8601)."""
    metadata = getattr(message, "metadata", None)
    if not isinstance(metadata, dict):  # the ORM row calls it metadata_
        metadata = getattr(message, "metadata_", None) or {}
    created_at = getattr(message, "created_at", None)
    return {
        "id": getattr(message, "id", None),
        "conversation_id": getattr(message, "conversation_id", None),
        "seq": getattr(message, "seq", None),
        "role": message.role,
        "content": message.content,
        "tool_calls": _tool_calls(message) or None,
        "tool_name": message.tool_name,
        "tool_call_id": message.tool_call_id,
        "metadata": metadata,
        "created_at": created_at.isoformat() if created_at is not None else None,
    }
