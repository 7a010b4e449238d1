"""OpenAI Responses API: history to ``input`` items, and output items back."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._parts import (
    FILE_MEDIA_TYPES,
    IMAGE_MEDIA_TYPES,
    AudioPart,
    FilePart,
    ImagePart,
    Part,
    ProviderItemPart,
    ReasoningPart,
    TextPart,
)
from .._records import MessageLike, NewMessage, ToolCall
from ..errors import ValidationError
from . import _parse as p
from ._common import arrange, preamble, tool_calls
from ._content import (
    REASONING,
    Piece,
    UserMessage,
    data_url,
    file_id_of,
    filename_of,
    is_web_url,
    join,
    parts_of,
    placeholder,
    source_of,
    user_turns,
)


def _medium(part: ImagePart | FilePart | AudioPart) -> dict[str, Any] | None:
    """The part as an ``input_image`` or ``input_file``; ``None`` when the API cannot take it."""
    if isinstance(part, AudioPart):  # message content takes text, images and files only
        return None
    source = source_of(part)
    if source is None:
        return None
    file_id = file_id_of("openai", source)
    if isinstance(part, ImagePart):
        image: dict[str, Any] = {"type": "input_image", "detail": part.detail or "auto"}
        if source.kind == "data" and source.media_type in IMAGE_MEDIA_TYPES:
            image["image_url"] = data_url(source.media_type, source.value)
        elif source.kind == "url" and is_web_url(source.value):
            image["image_url"] = source.value
        elif file_id is not None:
            image["file_id"] = file_id
        else:
            return None
        return image
    if source.kind == "data" and source.media_type in FILE_MEDIA_TYPES:
        name = filename_of(part, source.media_type)
        return {
            "type": "input_file",
            "file_data": data_url(source.media_type, source.value),
            "filename": name,
        }
    if source.kind == "url" and is_web_url(source.value):
        return {"type": "input_file", "file_url": source.value}
    if file_id is not None:
        return {"type": "input_file", "file_id": file_id}
    return None


def _reasoning(part: ReasoningPart) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "reasoning",
        "id": part.id,
        "summary": [{"type": "summary_text", "text": text} for text in part.summary],
    }
    if part.encrypted_content is not None:
        item["encrypted_content"] = part.encrypted_content
    return item


def _output(elements: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if len(elements) == 1 and elements[0]["type"] == "input_text":
        text: str = elements[0]["text"]
        return text
    return elements or ""


def _assistant_items(parts: Sequence[Part], *, calls: bool) -> list[dict[str, Any]]:
    """An assistant message's parts in order: its text as messages (the API takes an
    assistant's content as text only), its reasoning and OpenAI items between them.

    A reasoning item goes only with what followed it: the API rejects one "provided without
    its required following item", so reasoning with nothing after it in the message (no text,
    item or call: an answer cut short) is left out.
    """
    items: list[dict[str, Any]] = []
    pieces: list[Piece] = []

    def flush() -> None:
        if text := join(pieces):
            items.append({"role": "assistant", "content": text})
        pieces.clear()

    for part in parts:
        if isinstance(part, TextPart):
            if part.text:
                pieces.append(Piece(part.text))
        elif isinstance(part, ReasoningPart):
            flush()
            items.append(_reasoning(part))
        elif isinstance(part, ProviderItemPart):
            if part.provider == "openai":
                flush()
                items.append(dict(part.item))
        elif not isinstance(part, REASONING):  # Anthropic's thinking is left out
            pieces.append(Piece(placeholder(part), placeholder=True))
    flush()
    while not calls and items and items[-1].get("type") == "reasoning":
        items.pop()
    return items


def _input_items(message: MessageLike, parts: Sequence[Part]) -> list[dict[str, Any]]:
    """A user, system or tool message's parts: text, images and files as content."""
    role = message.role
    items: list[dict[str, Any]] = []
    provider_items: list[dict[str, Any]] = []
    elements: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            if part.text:
                elements.append({"type": "input_text", "text": part.text})
        elif isinstance(part, ProviderItemPart):
            if part.provider == "openai":
                if role != "tool" and elements:  # in place: after the content before it
                    items.append({"role": role, "content": _output(elements)})
                    elements = []
                (provider_items if role == "tool" else items).append(dict(part.item))
        elif not isinstance(part, REASONING):  # reasoning replays from assistant messages only
            medium = _medium(part) if role in ("user", "tool") else None
            elements.append(medium or {"type": "input_text", "text": placeholder(part)})
    if role == "tool":
        output = {"type": "function_call_output", "call_id": message.tool_call_id}
        return [{**output, "output": _output(elements)}, *provider_items]
    if elements or not items:
        items.append({"role": role, "content": _output(elements)})
    return items


def _items(message: MessageLike) -> list[dict[str, Any]]:
    content = message.content
    calls = tool_calls(message)
    if content is not None and not isinstance(content, str):
        parts = parts_of(content)
        if message.role != "assistant":
            return _input_items(message, parts)
        items = _assistant_items(parts, calls=bool(calls))
    elif message.role == "tool":
        call_id = message.tool_call_id
        return [{"type": "function_call_output", "call_id": call_id, "output": content or ""}]
    else:
        items = [{"role": message.role, "content": content or ""}] if content or not calls else []
    items.extend(
        {
            "type": "function_call",
            "call_id": c["id"],
            "name": c["name"],
            "arguments": c["arguments"],
        }
        for c in calls
    )
    return items


def to_openai_responses_input(
    messages: Iterable[MessageLike],
    *,
    system_prompt: str | None = None,
    summary: str | None = None,
    user_message: UserMessage = None,
) -> list[dict[str, Any]]:
    """History as the ``input`` items of an OpenAI Responses API request.

    Args:
        messages: the history, oldest first.
        system_prompt: a first system message item, when given.
        summary: a system message item after the system prompt, when given.
        user_message: a last user message item, when given: text, or parts (records or
            dicts).

    Returns:
        ``ResponseInputParam`` items: messages as ``{"role", "content"}`` items, each call as
        a ``function_call`` item (after the assistant's text, if any), each result as a
        ``function_call_output`` item; an assistant's ``reasoning`` items and other OpenAI
        items replayed where they were, before what followed them.

    Raises:
        ValidationError: a part of ``user_message`` is not shaped like a part.
    """
    items = preamble(system_prompt, summary)
    for message in [*arrange(messages), *user_turns(user_message)]:
        items.extend(_items(message))
    return items


# -- the way back ---------------------------------------------------------------------------


def _parts(value: Any, field: str) -> str | list[Part]:
    """Message content or a call's output as text, or as parts when it holds more."""
    if value is None or isinstance(value, str):
        return value or ""
    if not isinstance(value, Sequence):
        raise ValidationError(field, f"must be a string or a list of parts, not {value!r}")
    parts: list[Part] = []
    for i, raw in enumerate(value):
        where = f"{field}[{i}]"
        item = p.mapping(raw, where)
        kind = item.get("type")
        if kind in ("output_text", "input_text"):
            parts.append(TextPart(text=p.string(item.get("text"), f"{where}.text")))
        elif kind == "refusal":
            parts.append(TextPart(text=p.string(item.get("refusal"), f"{where}.refusal")))
        elif kind == "input_image":
            url = p.optional_string(item.get("image_url"), f"{where}.image_url")
            file_id = p.optional_string(item.get("file_id"), f"{where}.file_id")
            parts.append(p.image(url, file_id, item.get("detail"), where))
        elif kind == "input_file":
            parts.append(p.file(item, where, default="application/pdf"))
        else:
            raise ValidationError(f"{where}.type", f"is not a Responses content part: {kind!r}")
    return p.content_of(parts)


def _reasoning_part(item: Mapping[str, Any], where: str) -> ReasoningPart:
    summary = [p.mapping(s, f"{where}.summary") for s in item.get("summary") or ()]
    return ReasoningPart(
        id=p.string(item.get("id"), f"{where}.id"),
        summary=tuple(p.string(s.get("text"), f"{where}.summary.text") for s in summary),
        encrypted_content=p.optional_string(
            item.get("encrypted_content"), f"{where}.encrypted_content"
        ),
    )


def from_openai_responses(data: Any) -> list[NewMessage]:
    """OpenAI Responses API output items as messages to append.

    Consecutive output items become one assistant message: ``message`` items as its text,
    ``function_call`` items as its calls, ``reasoning`` items (id, summary, encrypted content)
    as ``ReasoningPart`` and every other item (hosted tools: web search,
    file search, code interpreter, image generation, computer use, MCP, ...) verbatim as an
    OpenAI ``ProviderItemPart``, in order. What comes after a call starts
    a new message, so replay keeps the order. ``function_call_output`` items (the results an
    agent adds) become tool messages. Content that is only text is stored as one string.

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
    parts: list[Part] = []
    calls: list[ToolCall] = []
    opened = False  # an assistant message item was seen, if empty

    def flush() -> None:
        nonlocal opened
        if parts or calls or opened:
            out.append(p.assistant(parts, calls))
        parts.clear()
        calls.clear()
        opened = False

    for i, item in enumerate(p.items(data, "output")):
        where = f"output[{i}]"
        entry = p.mapping(item, where)
        kind = entry.get("type", "message")
        if kind == "function_call":
            call = ToolCall(
                id=p.string(entry.get("call_id"), f"{where}.call_id"),
                name=p.string(entry.get("name"), f"{where}.name"),
                arguments=str(entry.get("arguments") or ""),
            )
            names[call.id] = call.name
            calls.append(call)
            continue
        if kind == "function_call_output":
            flush()
            call_id = p.string(entry.get("call_id"), f"{where}.call_id")
            output = _parts(entry.get("output"), f"{where}.output")
            out.append(
                p.message("tool", output, tool_call_id=call_id, tool_name=names.get(call_id))
            )
            continue
        role = p.role(entry.get("role"), f"{where}.role") if kind == "message" else "assistant"
        if role != "assistant" or calls:  # what follows calls starts a new message
            flush()
        if kind != "message":
            parts.append(
                _reasoning_part(entry, where)
                if kind == "reasoning"
                else ProviderItemPart(provider="openai", item=dict(entry))
            )
            continue
        content = _parts(entry.get("content"), f"{where}.content")
        if role != "assistant":
            out.append(p.message(role, content))
            continue
        opened = True
        if isinstance(content, str):
            parts.extend([TextPart(text=content)] if content else [])
        else:
            parts.extend(content)
    flush()
    return out
