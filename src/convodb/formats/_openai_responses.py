"""OpenAI Responses API: history to ``input`` items, and output items back."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .._records import NewMessage, ToolCall
from . import _parse as p
from ._common import MessageLike, arrange, preamble, tool_calls, user_turn


def to_openai_responses_input(
    messages: Iterable[MessageLike],
    *,
    system_prompt: str | None = None,
    summary: str | None = None,
    user_message: str | None = None,
) -> list[dict[str, Any]]:
    """History as the ``input`` items of an OpenAI Responses API request.

    Args:
        messages: the history, oldest first.
        system_prompt: a first system message item, when given.
        summary: a system message item after the system prompt, when given.
        user_message: a last user message item, when given.

    Returns:
        ``ResponseInputParam`` items: text as ``{"role", "content"}`` messages, each call as a
        ``function_call`` item (after the assistant's text, if any), each result as a
        ``function_call_output`` item.
    """
    items = preamble(system_prompt, summary)
    for message in arrange(messages):
        calls = tool_calls(message)
        if message.role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.tool_call_id,
                    "output": message.content or "",
                }
            )
            continue
        if message.content or not calls:
            items.append({"role": message.role, "content": message.content or ""})
        items.extend(
            {
                "type": "function_call",
                "call_id": c["id"],
                "name": c["name"],
                "arguments": c["arguments"],
            }
            for c in calls
        )
    items.extend(user_turn(user_message))
    return items


_RESPONSES_TEXT = {"output_text": "text", "input_text": "text", "refusal": "refusal"}


def from_openai_responses(data: Any) -> list[NewMessage]:
    """OpenAI Responses API output items as messages to append.

    Consecutive assistant ``message`` and ``function_call`` items become one assistant message
    carrying the calls; ``function_call_output`` items (the results an agent adds) become tool
    messages. ``reasoning`` items and provider-hosted tool calls are skipped.

    Args:
        data: a ``Response`` (its ``output`` is used) or a list of items, as dicts or SDK
            objects.

    Returns:
        The messages, in order.

    Raises:
        ValidationError: ``data`` is not shaped like Responses API items.
    """
    data = p.data(data)
    if isinstance(data, Mapping) and "output" in data:
        data = data["output"]
    names: dict[str, str] = {}
    out: list[NewMessage] = []
    texts: list[str] = []
    calls: list[ToolCall] = []

    def flush() -> None:
        if texts or calls:
            out.append(p.assistant(texts, calls))
        texts.clear()
        calls.clear()

    for i, item in enumerate(p.items(data, "output")):
        where = f"output[{i}]"
        entry = p.mapping(item, where)
        kind = entry.get("type", "message")
        if kind == "message":
            role = p.role(entry.get("role"), f"{where}.role")
            text = p.text(entry.get("content"), f"{where}.content", _RESPONSES_TEXT) or ""
            if role == "assistant":
                if calls:  # text after calls starts a new assistant message
                    flush()
                texts.append(text)
            else:
                flush()
                out.append(NewMessage(role=role, content=text))
        elif kind == "function_call":
            call = ToolCall(
                id=p.string(entry.get("call_id"), f"{where}.call_id"),
                name=p.string(entry.get("name"), f"{where}.name"),
                arguments=str(entry.get("arguments") or ""),
            )
            names[call.id] = call.name
            calls.append(call)
        elif kind == "function_call_output":
            flush()
            call_id = p.string(entry.get("call_id"), f"{where}.call_id")
            output = p.text(entry.get("output"), f"{where}.output", _RESPONSES_TEXT) or ""
            out.append(
                NewMessage(
                    role="tool", content=output, tool_call_id=call_id, tool_name=names.get(call_id)
                )
            )
    flush()
    return out
