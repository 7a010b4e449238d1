"""OpenAI Chat Completions: history to ``messages``, and messages back."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .._records import NewMessage, ToolCall
from ..errors import ValidationError
from . import _parse as p
from ._common import MessageLike, arrange, preamble, tool_calls, user_turn


def to_openai_chat(message: MessageLike) -> dict[str, Any]:
    """One message as an OpenAI Chat Completions message param."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if getattr(message, "tool_calls", None):
        out["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in tool_calls(message)
        ]
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id
    return out


def to_openai_chat_messages(
    messages: Iterable[MessageLike],
    *,
    system_prompt: str | None = None,
    summary: str | None = None,
    user_message: str | None = None,
) -> list[dict[str, Any]]:
    """History as the ``messages`` of an OpenAI Chat Completions request.

    ```python
    messages = to_openai_chat_messages(window.messages, system_prompt="Be brief.",
                                       user_message="And tomorrow?")
    client.chat.completions.create(model="gpt-4o", messages=messages)
    ```

    Args:
        messages: the history, oldest first.
        system_prompt: a first system message, when given.
        summary: a system message after the system prompt, when given.
        user_message: a last user message, when given.

    Returns:
        ``ChatCompletionMessageParam`` dicts: assistant calls as ``tool_calls``, results as
        ``tool`` messages with ``tool_call_id``.
    """
    return [
        *preamble(system_prompt, summary),
        *(to_openai_chat(m) for m in arrange(messages)),
        *user_turn(user_message),
    ]


_CHAT_TEXT = {"text": "text", "refusal": "refusal"}


def from_openai_chat(data: Any) -> list[NewMessage]:
    """OpenAI Chat Completions messages as messages to append.

    ```python
    completion = client.chat.completions.create(model="gpt-4o", messages=messages)
    new = from_openai_chat(completion.choices[0].message)
    ```

    Args:
        data: a ``ChatCompletion`` (its first choice is used), one message, or a list of
            messages (e.g. the assistant message and the ``tool`` results the agent added),
            as dicts or SDK objects. A refusal is stored as the assistant's text.

    Returns:
        One :class:`~convodb.NewMessage` per message, in order; tool results carry the
        ``tool_name`` of their call when the call is in ``data``.

    Raises:
        ValidationError: ``data`` is not shaped like Chat Completions messages.
    """
    data = p.data(data)
    if isinstance(data, Mapping) and "choices" in data:
        choices = data["choices"]
        if not choices:
            raise ValidationError("choices", "is empty: the completion has no message")
        data = p.mapping(choices[0], "choices[0]").get("message")
    names: dict[str, str] = {}
    out: list[NewMessage] = []
    for i, item in enumerate(p.items(data, "messages")):
        where = f"messages[{i}]"
        message = p.mapping(item, where)
        role = p.role(message.get("role"), f"{where}.role")
        text = p.text(message.get("content"), f"{where}.content", _CHAT_TEXT)
        if role == "tool":
            call_id = p.string(message.get("tool_call_id"), f"{where}.tool_call_id")
            out.append(
                NewMessage(
                    role="tool",
                    content=text or "",
                    tool_call_id=call_id,
                    tool_name=names.get(call_id),
                )
            )
        elif role == "assistant":
            calls = []
            for j, raw in enumerate(message.get("tool_calls") or ()):
                call = p.mapping(raw, f"{where}.tool_calls[{j}]")
                function = p.mapping(call.get("function"), f"{where}.tool_calls[{j}].function")
                calls.append(
                    ToolCall(
                        id=p.string(call.get("id"), f"{where}.tool_calls[{j}].id"),
                        name=p.string(function.get("name"), f"{where}.tool_calls[{j}].name"),
                        arguments=str(function.get("arguments") or ""),
                    )
                )
                names[calls[-1].id] = calls[-1].name
            if text is None and isinstance(message.get("refusal"), str):
                text = message["refusal"]
            out.append(p.assistant([text or ""], calls))
        else:
            out.append(NewMessage(role=role, content=text or ""))
    return out
