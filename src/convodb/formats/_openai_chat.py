"""OpenAI Chat Completions: history to ``messages``, and messages back."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._parts import (
    AUDIO_FORMATS,
    IMAGE_MEDIA_TYPES,
    AudioPart,
    FilePart,
    ImagePart,
    Part,
    TextPart,
)
from .._records import MessageLike, NewMessage, ToolCall
from ..errors import ValidationError
from . import _parse as p
from ._common import arrange, preamble, tool_calls
from ._content import (
    REASONING,
    UserMessage,
    data_url,
    decoded_text,
    file_id_of,
    filename_of,
    is_web_url,
    parts_of,
    placeholder,
    source_of,
    user_turns,
)

_PDF = "application/pdf"
_NEXT_USER_MESSAGE = "in the next user message"


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _medium(part: ImagePart | FilePart | AudioPart) -> dict[str, Any] | None:
    """The part as a user content part; ``None`` when Chat Completions cannot take it."""
    if isinstance(part, AudioPart):
        if part.data is None or part.format not in AUDIO_FORMATS:
            return None
        return {"type": "input_audio", "input_audio": {"data": part.data, "format": part.format}}
    source = source_of(part)
    if source is None:
        return None
    if isinstance(part, ImagePart):
        if source.kind == "data" and source.media_type in IMAGE_MEDIA_TYPES:
            image = {"url": data_url(source.media_type, source.value)}
        elif source.kind == "url" and is_web_url(source.value):
            image = {"url": source.value}
        else:  # image_url takes no file id
            return None
        if part.detail is not None:
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    # Chat Completions takes PDFs only; OpenAI's advice for text files is to send their text.
    text = decoded_text(source)
    if text is not None:
        return _text(f"{placeholder(part)}\n{text}")
    if source.kind == "data" and source.media_type == _PDF:
        file = {"file_data": data_url(_PDF, source.value), "filename": filename_of(part, _PDF)}
        return {"type": "file", "file": file}
    file_id = file_id_of("openai", source)
    if file_id is not None and source.media_type in (None, _PDF):
        return {"type": "file", "file": {"file_id": file_id}}
    return None  # a URL, another provider's file id, or data not loaded


def _content(
    message: MessageLike, parts: Sequence[Part], carry: list[dict[str, Any]] | None
) -> str | list[dict[str, Any]] | None:
    elements: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            if part.text:
                elements.append(_text(part.text))
            continue
        if isinstance(part, REASONING):  # Chat Completions takes no reasoning back
            continue
        medium = _medium(part)
        if medium is not None and (medium["type"] == "text" or message.role == "user"):
            elements.append(medium)
        elif medium is not None and message.role == "tool" and carry is not None:
            carry.append(medium)  # a tool message takes text only
            elements.append(_text(placeholder(part, _NEXT_USER_MESSAGE)))
        else:
            elements.append(_text(placeholder(part)))
    if not elements:
        return None if message.role == "assistant" and tool_calls(message) else ""
    if len(elements) == 1 and elements[0]["type"] == "text":
        text: str = elements[0]["text"]
        return text
    return elements


def _message(message: MessageLike, carry: list[dict[str, Any]] | None) -> dict[str, Any]:
    content = message.content
    shaped: str | list[dict[str, Any]] | None = content if isinstance(content, str) else None
    if content is not None and not isinstance(content, str):
        shaped = _content(message, parts_of(content), carry)
    out: dict[str, Any] = {"role": message.role, "content": shaped}
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


def to_openai_chat(message: MessageLike) -> dict[str, Any]:
    """One message as an OpenAI Chat Completions message param.

    Parts a message of its role cannot carry (an image in a tool result, say) become text
    placeholders; :func:`to_openai_chat_messages` sends a tool result's media after it.
    """
    return _message(message, None)


def _attachments(results: list[tuple[MessageLike, list[dict[str, Any]]]]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for result, media in results:
        name = f" ({result.tool_name})" if result.tool_name else ""
        content.append(
            _text(f"Attachments of the result of tool call {result.tool_call_id}{name}:")
        )
        content.extend(media)
    return {"role": "user", "content": content}


def to_openai_chat_messages(
    messages: Iterable[MessageLike],
    *,
    system_prompt: str | None = None,
    summary: str | None = None,
    user_message: UserMessage = None,
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
        user_message: a last user message, when given: text, or parts (records or dicts).

    Returns:
        ``ChatCompletionMessageParam`` dicts: assistant calls as ``tool_calls``, results as
        ``tool`` messages with ``tool_call_id``. A tool message takes only text, so the images,
        PDFs and audio of tool results follow the last of them in one user message.

    Raises:
        ValidationError: a part of ``user_message`` is not shaped like a part.
    """
    out = preamble(system_prompt, summary)
    carried: list[tuple[MessageLike, list[dict[str, Any]]]] = []
    for message in [*arrange(messages), *user_turns(user_message)]:
        if carried and message.role != "tool":
            out.append(_attachments(carried))
            carried = []
        carry: list[dict[str, Any]] = []
        out.append(_message(message, carry))
        if carry:
            carried.append((message, carry))
    if carried:
        out.append(_attachments(carried))
    return out


# -- the way back ---------------------------------------------------------------------------


def _parts(value: Any, field: str) -> str | list[Part] | None:
    """Chat content as text, or as parts when it holds more than text."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, Sequence):
        raise ValidationError(field, f"must be a string or a list of parts, not {value!r}")
    parts: list[Part] = []
    for i, raw in enumerate(value):
        where = f"{field}[{i}]"
        item = p.mapping(raw, where)
        kind = item.get("type")
        if kind in ("text", "refusal"):
            parts.append(TextPart(text=p.string(item.get(kind), f"{where}.{kind}")))
        elif kind == "image_url":
            image = p.mapping(item.get("image_url"), f"{where}.image_url")
            url = p.string(image.get("url"), f"{where}.image_url.url")
            parts.append(p.image(url, None, image.get("detail"), f"{where}.image_url"))
        elif kind == "file":
            file = p.mapping(item.get("file"), f"{where}.file")
            parts.append(p.file(file, f"{where}.file", default=_PDF))
        elif kind == "input_audio":
            audio = p.mapping(item.get("input_audio"), f"{where}.input_audio")
            audio_format = audio.get("format")
            if audio_format not in AUDIO_FORMATS:
                raise ValidationError(
                    f"{where}.input_audio.format", f"must be one of {list(AUDIO_FORMATS)}"
                )
            data = p.string(audio.get("data"), f"{where}.input_audio.data")
            parts.append(AudioPart(data=data, format=audio_format))
        else:
            raise ValidationError(f"{where}.type", f"is not a Chat Completions part: {kind!r}")
    return p.content_of(parts)


def from_openai_chat(data: Any) -> list[NewMessage]:
    """OpenAI Chat Completions messages as messages to append.

    ```python
    completion = client.chat.completions.create(model="gpt-4o", messages=messages)
    new = from_openai_chat(completion.choices[0].message)
    ```

    Content that is only text (one string or text parts) is stored as one string; content
    with images (``image_url``), files (``file``) or audio (``input_audio``) as parts.

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
        content = _parts(message.get("content"), f"{where}.content")
        if role == "tool":
            call_id = p.string(message.get("tool_call_id"), f"{where}.tool_call_id")
            out.append(
                p.message("tool", content or "", tool_call_id=call_id, tool_name=names.get(call_id))
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
            if content is None and isinstance(message.get("refusal"), str):
                content = message["refusal"]
            out.append(p.assistant(content, calls))
        else:
            out.append(p.message(role, content or ""))
    return out
