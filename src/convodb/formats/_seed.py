"""The seed's helpers, fixed: ``build_message_array`` and ``message_to_dict``.

The seed dropped ``tool_calls`` and ``tool_call_id``, which made its arrays invalid input for
the OpenAI Chat Completions API as soon as a tool was used. These keep the seed's other
behaviour: they neither reorder nor drop messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._parts import part_to_dict
from .._records import MessageLike
from ._common import tool_calls
from ._content import UserMessage, parts_of, user_turns
from ._openai_chat import to_openai_chat


def build_message_array(
    db_messages: Iterable[MessageLike],
    user_message: UserMessage,
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """Stored messages as an OpenAI Chat Completions ``messages`` array.

    ```python
    history = await service.get_conversation_history(cid, user_id)
    messages = build_message_array(history, "What's the weather?", system_prompt="Be brief.")
    ```

    Args:
        db_messages: the history, oldest first (as ``get_conversation_history`` returns it).
        user_message: the new user turn, appended last; ``None`` to add none. Text, or parts
            (records or dicts).
        system_prompt: put first as a system message, when given.

    Returns:
        ``{"role", "content"}`` dicts, with ``tool_calls`` on assistant messages that made
        calls and ``tool_call_id`` on tool results; content parts as
        :func:`to_openai_chat` shapes them.

    Raises:
        ValidationError: a part of ``user_message`` is not shaped like a part.
    """
    array: list[dict[str, Any]] = []
    if system_prompt is not None:
        array.append({"role": "system", "content": system_prompt})
    array.extend(to_openai_chat(m) for m in [*db_messages, *user_turns(user_message)])
    return array


def message_to_dict(message: MessageLike) -> dict[str, Any]:
    """A stored message as a JSON-ready dict (timestamps in ISO 8601, parts as dicts)."""
    metadata = getattr(message, "metadata", None)
    if not isinstance(metadata, dict):  # the ORM row calls it metadata_
        metadata = getattr(message, "metadata_", None) or {}
    created_at = getattr(message, "created_at", None)
    content: str | list[dict[str, Any]] | None
    if message.content is None or isinstance(message.content, str):
        content = message.content
    else:
        content = [part_to_dict(part) for part in parts_of(message.content)]
    return {
        "id": getattr(message, "id", None),
        "conversation_id": getattr(message, "conversation_id", None),
        "seq": getattr(message, "seq", None),
        "role": message.role,
        "content": content,
        "tool_calls": tool_calls(message) or None,
        "tool_name": message.tool_name,
        "tool_call_id": message.tool_call_id,
        "metadata": metadata,
        "created_at": created_at.isoformat() if created_at is not None else None,
    }
