"""Anthropic Messages: history to ``system`` and ``messages``, and turns back."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._parts import (
    IMAGE_MEDIA_TYPES,
    AudioPart,
    FilePart,
    ImagePart,
    Part,
    ProviderItemPart,
    RedactedThinkingPart,
    TextPart,
    ThinkingPart,
)
from .._records import MessageLike, NewMessage, ToolCall
from ..errors import ValidationError
from . import _parse as p
from ._common import arrange, tool_calls
from ._content import (
    REASONING,
    UserMessage,
    decoded_text,
    file_id_of,
    is_pdf,
    is_web_url,
    join,
    parts_of,
    placeholder,
    source_of,
    text_pieces,
    user_turns,
)

ANTHROPIC_LEADING_USER_TEXT = "(earlier messages omitted)"
"""The user turn put before a history that starts with an assistant message, for Anthropic."""
RAW_ARGUMENTS_KEY = "_raw_arguments"
"""Anthropic ``tool_use`` input key holding arguments that are not a JSON object."""

_ANTHROPIC_ID = re.compile(r"[A-Za-z0-9_-]+")
_THINKING = ("thinking", "redacted_thinking")


def _anthropic_id(call_id: str) -> str:
    if _ANTHROPIC_ID.fullmatch(call_id):
        return call_id
    return "toolu_" + hashlib.sha256(call_id.encode("utf-8")).hexdigest()[:24]


def _anthropic_input(arguments: str) -> dict[str, Any]:
    # OpenAI models send "" for a call without parameters.
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    return {RAW_ARGUMENTS_KEY: arguments}


def _text(text: str, *, blank: bool = False) -> list[dict[str, Any]]:
    # The API rejects text blocks that are empty, or only whitespace (unless the message has
    # other text); Anthropic's web search returns such blocks. ``blank`` keeps whitespace.
    return [{"type": "text", "text": text}] if (text if blank else text.strip()) else []


def _medium(part: ImagePart | FilePart | AudioPart) -> dict[str, Any] | None:
    """The part as an ``image`` or ``document`` block; ``None`` when the API cannot take it."""
    if isinstance(part, AudioPart):
        return None
    source = source_of(part)
    if source is None:
        return None
    file_id = file_id_of("anthropic", source)
    src: dict[str, Any]
    if isinstance(part, ImagePart):
        if source.kind == "data" and source.media_type in IMAGE_MEDIA_TYPES:
            src = {"type": "base64", "media_type": source.media_type, "data": source.value}
        elif source.kind == "url" and is_web_url(source.value):
            src = {"type": "url", "url": source.value}
        elif file_id is not None:
            src = {"type": "file", "file_id": file_id}
        else:
            return None
        return {"type": "image", "source": src}
    text = decoded_text(source)
    if text is not None and text.strip():
        src = {"type": "text", "media_type": "text/plain", "data": text}
    elif source.kind == "data" and source.media_type == "application/pdf":
        src = {"type": "base64", "media_type": "application/pdf", "data": source.value}
    elif source.kind == "url" and is_web_url(source.value) and is_pdf(source):
        src = {"type": "url", "url": source.value}  # documents by URL are PDFs only
    elif file_id is not None:
        src = {"type": "file", "file_id": file_id}
    else:
        return None
    block = {"type": "document", "source": src}
    if part.filename:
        block["title"] = part.filename
    return block


def _part_blocks(parts: Sequence[Part], role: str) -> list[dict[str, Any]]:
    """Parts as content blocks, in order. Thinking is replayed only in assistant turns and
    media only where the API takes it (user turns, tool results); the rest is a placeholder."""
    blocks: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            blocks.extend(_text(part.text))
        elif isinstance(part, ThinkingPart):
            if role == "assistant":
                blocks.append(
                    {"type": "thinking", "thinking": part.thinking, "signature": part.signature}
                )
        elif isinstance(part, RedactedThinkingPart):
            if role == "assistant":
                blocks.append({"type": "redacted_thinking", "data": part.data})
        elif isinstance(part, ProviderItemPart):
            if part.provider == "anthropic":
                blocks.append(dict(part.item))
        elif not isinstance(part, REASONING):  # OpenAI reasoning is left out
            medium = _medium(part) if role in ("user", "tool") else None
            blocks.extend([medium] if medium is not None else _text(placeholder(part)))
    return blocks


def _blocks(message: MessageLike, *, blank: bool = False) -> list[dict[str, Any]]:
    content = message.content
    text = content if content is None or isinstance(content, str) else None
    parts = None if content is None or isinstance(content, str) else parts_of(content)
    if message.role == "tool":
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": _anthropic_id(message.tool_call_id or ""),
        }
        if parts is not None:
            inner = _part_blocks(parts, "tool")
            if len(inner) == 1 and inner[0]["type"] == "text":
                block["content"] = inner[0]["text"]
            elif inner:
                block["content"] = inner
        elif text and text.strip():
            block["content"] = text
        return [block]
    blocks = (
        _part_blocks(parts, message.role) if parts is not None else _text(text or "", blank=blank)
    )
    blocks.extend(
        {
            "type": "tool_use",
            "id": _anthropic_id(c["id"]),
            "name": c["name"],
            "input": _anthropic_input(c["arguments"]),
        }
        for c in tool_calls(message)
    )
    return blocks


def _thinking_first(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An assistant turn that starts with its thinking.

    With thinking enabled, the API requires the assistant turn a request continues to start
    with a thinking block. A turn merged from several messages (say, a stored text-only
    message before the one the model answered with thinking and calls) would start with
    the earlier text, so the first run of thinking blocks moves to the front, unchanged.
    """
    first = next((i for i, b in enumerate(blocks) if b.get("type") in _THINKING), 0)
    end = first
    while end < len(blocks) and blocks[end].get("type") in _THINKING:
        end += 1
    return [*blocks[first:end], *blocks[:first], *blocks[end:]]


def to_anthropic(
    messages: Iterable[MessageLike],
    *,
    system_prompt: str | None = None,
    summary: str | None = None,
    user_message: UserMessage = None,
) -> dict[str, Any]:
    """History as the ``system`` and ``messages`` of an Anthropic Messages request.

    ```python
    client.messages.create(model="claude-sonnet-4-5", max_tokens=1024,
                           **to_anthropic(window.messages, system_prompt="Be brief."))
    ```

    Args:
        messages: the history, oldest first.
        system_prompt: the start of ``system``, when given.
        summary: added to ``system`` after the system prompt, when given.
        user_message: a last user turn, when given: text, or parts (records or dicts).

    Returns:
        ``{"messages": [...]}`` with ``MessageParam`` dicts whose roles alternate, starting
        with ``user``, plus ``"system"`` when there is any system text (system prompt, summary
        and stored system messages, separated by blank lines). An assistant turn with thinking
        starts with it.

    Raises:
        ValidationError: a part of ``user_message`` is not shaped like a part.
    """
    system_parts = [t for t in (system_prompt, summary) if t]
    turns: list[dict[str, Any]] = []
    # The new user message is sent as given, even if blank: dropping it would turn the last
    # assistant turn into a prefill.
    history = [(m, False) for m in arrange(messages)]
    for message, new in [*history, *((t, True) for t in user_turns(user_message))]:
        if message.role == "system":
            content = message.content
            if content is not None and not isinstance(content, str):
                content = join(text_pieces(parts_of(content)))
            if content:
                system_parts.append(content)
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message, blank=new)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "assistant":
            turn["content"] = _thinking_first(turn["content"])
        else:  # tool results must open a user turn; sorted() is stable
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    if turns and turns[0]["role"] == "assistant":
        lead = [{"type": "text", "text": ANTHROPIC_LEADING_USER_TEXT}]
        turns.insert(0, {"role": "user", "content": lead})
    out: dict[str, Any] = {"messages": turns}
    if system_parts:
        out["system"] = "\n\n".join(system_parts)
    return out


# -- the way back ---------------------------------------------------------------------------


def _unwrap_input(value: Any) -> str:
    if isinstance(value, Mapping) and set(value) == {RAW_ARGUMENTS_KEY}:
        raw = value[RAW_ARGUMENTS_KEY]
        if isinstance(raw, str):
            return raw
    return json.dumps(value, ensure_ascii=False)


def _medium_part(block: Mapping[str, Any], where: str) -> Part | None:
    """An ``image`` or ``document`` block as a part; ``None`` for a source with no part form."""
    source = p.mapping(block.get("source"), f"{where}.source")
    kind = source.get("type")
    title = p.optional_string(block.get("title"), f"{where}.title")
    if kind == "base64":
        data = p.string(source.get("data"), f"{where}.source.data")
        media_type = p.string(source.get("media_type"), f"{where}.source.media_type")
        if block.get("type") == "image":
            return ImagePart(data=data, media_type=media_type)
        return FilePart(data=data, media_type=media_type, filename=title)
    if kind == "url":
        url = p.string(source.get("url"), f"{where}.source.url")
        if block.get("type") == "image":
            return ImagePart(url=url)
        return FilePart(url=url, media_type="application/pdf", filename=title)
    if kind == "file":
        file_id = p.string(source.get("file_id"), f"{where}.source.file_id")
        if block.get("type") == "image":
            return ImagePart(file_id=file_id)
        return FilePart(file_id=file_id, filename=title)
    if kind == "text" and block.get("type") == "document":
        text = p.string(source.get("data"), f"{where}.source.data")
        data = base64.b64encode(text.encode("utf-8")).decode("ascii")
        media_type = source.get("media_type") or "text/plain"
        return FilePart(data=data, media_type=media_type, filename=title)
    return None


def _block_part(block: Mapping[str, Any], where: str) -> Part:
    """A content block as a part; blocks with no neutral form are kept verbatim."""
    kind = block.get("type")
    if kind == "text":
        return TextPart(text=p.string(block.get("text"), f"{where}.text"))
    if kind == "thinking":
        return ThinkingPart(
            thinking=p.string(block.get("thinking"), f"{where}.thinking"),
            signature=p.string(block.get("signature"), f"{where}.signature"),
        )
    if kind == "redacted_thinking":
        return RedactedThinkingPart(data=p.string(block.get("data"), f"{where}.data"))
    if kind in ("image", "document"):
        part = _medium_part(block, where)
        if part is not None:
            return part
    return ProviderItemPart(provider="anthropic", item=dict(block))


def _result_content(value: Any, where: str) -> str | list[Part]:
    if value is None or isinstance(value, str):
        return value or ""
    if not isinstance(value, Sequence):
        raise ValidationError(where, f"must be a string or a list of blocks, not {value!r}")
    blocks = [p.mapping(b, f"{where}[{k}]") for k, b in enumerate(value)]
    return p.content_of([_block_part(b, f"{where}[{k}]") for k, b in enumerate(blocks)])


def from_anthropic(data: Any) -> list[NewMessage]:
    """Anthropic Messages turns as messages to append.

    An assistant turn (e.g. the API's response) becomes one assistant message: its
    ``tool_use`` blocks as calls (``input`` as JSON text), the rest as its content, in order —
    ``thinking`` and ``redacted_thinking`` blocks (signature and all, so they can be replayed)
    and blocks with no neutral form (``server_tool_use``, ``web_search_tool_result``, ...)
    verbatim as Anthropic ``ProviderItemPart``. A user turn becomes one
    tool message per ``tool_result`` block (``metadata={"is_error": True}`` when flagged),
    followed by a user message with the rest (text, images, documents), if any. Content that
    is only text is stored as one string.

    Args:
        data: one turn — a ``Message`` response or a ``MessageParam`` — or a list of turns,
            as dicts or SDK objects.

    Returns:
        The messages, in order; tool results carry the ``tool_name`` of their call when the
        call is in ``data``.

    Raises:
        ValidationError: ``data`` is not shaped like Anthropic turns.
    """
    names: dict[str, str] = {}
    out: list[NewMessage] = []
    for i, item in enumerate(p.items(data, "messages")):
        where = f"messages[{i}]"
        turn = p.mapping(item, where)
        role = turn.get("role")
        content = turn.get("content")
        if role not in ("user", "assistant"):
            raise ValidationError(f"{where}.role", f"must be user or assistant: {role!r}")
        if isinstance(content, str):
            out.append(p.message(role, content))
            continue
        if not isinstance(content, Sequence):
            raise ValidationError(f"{where}.content", "must be a string or a list of blocks")
        parts: list[Part] = []
        calls: list[ToolCall] = []
        for j, raw in enumerate(content):
            at = f"{where}.content[{j}]"
            block = p.mapping(raw, at)
            kind = block.get("type")
            if kind == "tool_use" and role == "assistant":
                call = ToolCall(
                    id=p.string(block.get("id"), f"{at}.id"),
                    name=p.string(block.get("name"), f"{at}.name"),
                    arguments=_unwrap_input(block.get("input", {})),
                )
                names[call.id] = call.name
                calls.append(call)
            elif kind == "tool_result" and role == "user":
                call_id = p.string(block.get("tool_use_id"), f"{at}.tool_use_id")
                out.append(
                    p.message(
                        "tool",
                        _result_content(block.get("content"), f"{at}.content"),
                        tool_call_id=call_id,
                        tool_name=names.get(call_id),
                        metadata={"is_error": True} if block.get("is_error") else None,
                    )
                )
            else:
                parts.append(_block_part(block, at))
        if role == "assistant":
            out.append(p.assistant(parts, calls))
        elif parts:
            out.append(p.message("user", p.content_of(parts)))
    return out
