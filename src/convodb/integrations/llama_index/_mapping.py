"""``ChatMessage`` to convodb message and back: the mapping ``ConvodbChatStore`` stores
through (see the package's docstring)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeGuard

from llama_index.core.base.llms.types import ChatMessage

from ... import (
    AudioPart,
    FilePart,
    ImagePart,
    Limits,
    NewMessage,
    Part,
    StoredMessage,
    TextPart,
    ThinkingPart,
    ToolCall,
    ValidationError,
)
from ..._models import TOOL_FIELD_LENGTH
from ..._parts import AUDIO_FORMATS, FILE_MEDIA_TYPES, IMAGE_MEDIA_TYPES

__all__ = [
    "METADATA_KEY",
    "archived",
    "archived_positions",
    "encode_all",
    "renamed",
    "shifted",
    "stamped",
    "to_chat_message",
]

METADATA_KEY = "llama_index"
"""Where the store keeps what it needs in a conversation's and a message's metadata."""
_LIMITS = Limits()
_URL_LENGTH = 8192
_DETAILS = ("auto", "low", "high")
_MEDIA_ROLES = ("user", "assistant", "tool")

_ROLE_OF = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "function": "tool",
    "tool": "tool",
    "chatbot": "assistant",
    "model": "assistant",
}
"""The convodb role each LlamaIndex role is stored as."""


# -- ChatMessage -> convodb message ------------------------------------------------------


def encode_all(messages: object) -> list[NewMessage]:
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise ValidationError(
            "messages", f"must be a list of ChatMessage, not {type(messages).__name__}"
        )
    return [_encode(f"messages[{i}]", m) for i, m in enumerate(messages)]


def stamped(batch: list[NewMessage], *, after: int) -> list[NewMessage]:
    """Messages added to the archived conversation directly, marked with where they belong
    among the active ones: after the active message ``after``."""
    return [_with_meta(m, after=after) for m in batch]


def _with_meta(message: NewMessage, **values: int) -> NewMessage:
    metadata = dict(message.metadata or {})
    metadata[METADATA_KEY] = {**metadata.get(METADATA_KEY, {}), **values}
    return replace(message, metadata=metadata)


def _encode(field: str, message: object) -> NewMessage:
    """The convodb message that stands for ``message``, checked to decode back to it."""
    if not isinstance(message, ChatMessage):
        raise ValidationError(field, f"must be a ChatMessage, not {type(message).__name__}")
    try:
        data = message.model_dump(mode="json")
    except (ValueError, TypeError) as exc:  # PydanticSerializationError is a ValueError
        raise ValidationError(field, f"is not serializable as JSON: {exc}") from None
    original_role: str = data["role"]
    kwargs: dict[str, Any] = dict(data["additional_kwargs"])
    role = _ROLE_OF[original_role]
    meta: dict[str, Any] = {}

    tool_call_id = tool_name = None
    if role == "tool":
        if _fits(kwargs.get("tool_call_id")):
            tool_call_id = kwargs.pop("tool_call_id")
            moved = ["tool_call_id"]
            if _fits(kwargs.get("name")):
                tool_name = kwargs.pop("name")
                moved.append("name")
            meta["fields"] = moved
        else:
            role = "user"
    if role != original_role:
        meta["role"] = original_role

    parts: list[Part] = []
    calls: list[ToolCall] = []
    refs: list[dict[str, Any]] = []
    for block in data["blocks"]:
        ref = None
        if role == "assistant" and block.get("block_type") == "tool_call":
            ref = _call_from_block(block, calls)
        else:
            part = _part_from_block(block, role)
            if part is not None:
                rest = _rest(block, _block_of_part(part))
                if rest is not None:
                    parts.append(part)
                    ref = {"part": len(parts) - 1, **({"rest": rest} if rest else {})}
        refs.append(ref if ref is not None else {"block": block})

    raw_calls = kwargs.get("tool_calls")
    if role == "assistant" and isinstance(raw_calls, list) and raw_calls:
        entries = [_call_from_openai(entry, calls) for entry in raw_calls]
        if any("call" in entry for entry in entries):
            del kwargs["tool_calls"]
            meta["kwargs_calls"] = entries
    if kwargs:
        meta["kwargs"] = kwargs
    meta["blocks"] = refs

    content: str | tuple[Part, ...] | None
    if len(parts) == 1 and isinstance(parts[0], TextPart):
        content = parts[0].text
    elif parts:
        content = tuple(parts)
    else:
        content = None if calls else ""
    fields = (role, content, tuple(calls), tool_call_id, tool_name)
    if _decoded(*fields, {**meta, "blocks": None}) == data:
        del meta["blocks"]  # the parts alone give the blocks
    elif _decoded(*fields, meta) != data:
        # Not expected; kept whole rather than stored inexactly.
        meta = {"message": data}
        content, calls, tool_call_id, tool_name = message.content or "", [], None, None
        if role == "tool":
            role = "user"
    return NewMessage(
        role=role,  # type: ignore[arg-type]
        content=content,
        tool_calls=calls or None,
        tool_name=tool_name,
        tool_call_id=tool_call_id,
        metadata={METADATA_KEY: meta},
    )


def _fits(value: object) -> bool:
    """Whether a value can be a tool call's or tool message's id or name."""
    return isinstance(value, str) and 0 < len(value) <= TOOL_FIELD_LENGTH


def _rest(block: dict[str, Any], derived: dict[str, Any] | None) -> dict[str, Any] | None:
    """The block's fields its part does not give back; ``None`` when the part would not hold
    the block's data or source (the block is then kept whole)."""
    if derived is None or not derived.keys() <= block.keys():
        return None
    rest = {k: v for k, v in block.items() if k not in derived or derived[k] != v}
    if {"image", "audio", "data", "url", "text"} & rest.keys():
        return None
    return rest


def _part_from_block(block: dict[str, Any], role: str) -> Part | None:
    """The convodb part for a block, where convodb has one and takes it in that role."""
    kind = block.get("block_type")
    if kind == "text":
        text = block.get("text")
        return TextPart(text=text) if isinstance(text, str) else None
    if role not in _MEDIA_ROLES:
        return None
    if kind == "image":
        media_type = block.get("image_mimetype")
        allowed = media_type if media_type in IMAGE_MEDIA_TYPES else None
        detail = block.get("detail") if block.get("detail") in _DETAILS else None
        data, url = block.get("image"), block.get("url")
        if _base64(data) and url is None and allowed:
            return ImagePart(data=data, media_type=allowed, detail=detail)
        if _http_url(url) and data is None:
            return ImagePart(url=url, media_type=allowed, detail=detail)
        return None
    if kind == "document":
        media_type = block.get("document_mimetype")
        allowed = media_type if media_type in FILE_MEDIA_TYPES else None
        title = block.get("title")
        filename = title if _fits(title) else None
        data, url = block.get("data"), block.get("url")
        if _base64(data) and url is None and allowed:
            return FilePart(data=data, media_type=allowed, filename=filename)
        if _http_url(url) and data is None:
            return FilePart(url=url, media_type=allowed, filename=filename)
        return None
    if kind == "audio":
        data, audio_format = block.get("audio"), block.get("format")
        if _base64(data) and block.get("url") is None and audio_format in AUDIO_FORMATS:
            return AudioPart(data=data, format=audio_format)
    return None


def _base64(value: object) -> bool:
    """Whether ``value`` is non-empty base64 exactly as convodb gives stored data back."""
    if not isinstance(value, str) or not value:
        return False
    try:
        return base64.b64encode(base64.b64decode(value, validate=True)).decode() == value
    except (binascii.Error, ValueError):
        return False


def _http_url(value: object) -> bool:
    return (
        isinstance(value, str)
        and value.startswith(("https://", "http://"))
        and len(value) <= _URL_LENGTH
    )


def _call_from_block(block: dict[str, Any], calls: list[ToolCall]) -> dict[str, Any] | None:
    """A tool-call block as a convodb tool call, appended to ``calls``; its reference, or
    ``None`` when it cannot be one."""
    call_id, name, arguments = block.get("tool_call_id"), block.get("tool_name"), None
    tool_kwargs = block.get("tool_kwargs")
    if not (_fits(call_id) and _fits(name)) or any(c.id == call_id for c in calls):
        return None
    ref: dict[str, Any] = {"call": len(calls)}
    if isinstance(tool_kwargs, str):
        arguments, ref["raw"] = tool_kwargs, True
    elif isinstance(tool_kwargs, dict):
        arguments = json.dumps(tool_kwargs, ensure_ascii=False)
    else:
        return None
    rest = {k: v for k, v in block.items() if k not in _CALL_BLOCK_FIELDS}
    if rest:
        ref["rest"] = rest
    calls.append(ToolCall(id=call_id, name=name, arguments=arguments))  # type: ignore[arg-type]
    return ref


_CALL_BLOCK_FIELDS = frozenset({"block_type", "tool_call_id", "tool_name", "tool_kwargs"})


def _call_from_openai(entry: object, calls: list[ToolCall]) -> dict[str, Any]:
    """An OpenAI-shaped ``additional_kwargs["tool_calls"]`` entry as a convodb tool call,
    appended to ``calls``: ``{"call": index, "rest": …}``, or ``{"item": entry}`` as it is."""
    if isinstance(entry, dict) and isinstance(entry.get("function"), dict):
        call_id, function = entry.get("id"), entry["function"]
        name, arguments = function.get("name"), function.get("arguments")
        if (
            _fits(call_id)
            and _fits(name)
            and isinstance(arguments, str)
            and all(c.id != call_id for c in calls)
        ):
            rest = {k: v for k, v in entry.items() if k not in ("id", "function")}
            rest["function"] = {k: v for k, v in function.items() if k not in ("name", "arguments")}
            calls.append(ToolCall(id=call_id, name=name, arguments=arguments))  # type: ignore[arg-type]
            return {"call": len(calls) - 1, "rest": rest}
    return {"item": entry}


def renamed(error: ValidationError, field: str) -> ValidationError:
    """The same error (same type, message and limit) about another field."""
    text = str(error)
    prefix = f"{error.field}: "
    return type(error)(
        field, text[len(prefix) :] if text.startswith(prefix) else text, limit=error.limit
    )


_INDEX = re.compile(r"^messages\[(\d+)\]")


def shifted(error: ValidationError, offset: int) -> ValidationError:
    """The service's error about a chunk of a batch that starts at ``offset``, naming the
    message by its index in the whole batch."""
    found = _INDEX.match(error.field)
    if found is None or not offset:
        return error
    index = int(found.group(1)) + offset
    return renamed(error, f"messages[{index}]{error.field[found.end() :]}")


def archived(message: StoredMessage) -> NewMessage:
    """An active message as it is appended to the archived conversation, keeping its place."""
    meta = message.metadata.get(METADATA_KEY)
    if isinstance(meta, dict) and _from_meta(message, meta) is not None:
        metadata = {**message.metadata, METADATA_KEY: {**meta, "at": message.seq}}
        return NewMessage(
            role=message.role,
            content=message.content,
            tool_calls=message.tool_calls,
            tool_name=message.tool_name,
            tool_call_id=message.tool_call_id,
            metadata=metadata,
        )
    # Written through convodb's API, not this store: stored again as this store writes it.
    return _with_meta(_encode("message", to_chat_message(message)), at=message.seq)


def archived_positions(
    messages: Sequence[StoredMessage],
) -> list[tuple[tuple[int, int, int], StoredMessage]]:
    """Where each archived message (given in ``seq`` order) sorts among the active ones,
    whose position is ``(seq, 0, 0)``: at its active seq (``"at"``, moved there), or after
    the active message it followed (``"after"``, added as archived). A message appended
    through convodb's own API has neither: it sorts right after the archived one before it.

    Moved messages are appended in the order of their ``"at"`` (the oldest active ones are
    moved, under the active conversation's lock), so without messages added as archived,
    ``seq`` order is this order.
    """
    positioned: list[tuple[tuple[int, int, int], StoredMessage]] = []
    base = (0, 0)
    for message in messages:
        meta = message.metadata.get(METADATA_KEY)
        meta = meta if isinstance(meta, dict) else {}
        at, after = meta.get("at"), meta.get("after")
        if _integer(at):
            base, position = (at, 0), (at, 0, 0)
        elif _integer(after):
            base, position = (after, 1), (after, 1, message.seq)
        else:
            position = (*base, message.seq)
        positioned.append((position, message))
    return positioned


def _integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# -- convodb message -> ChatMessage ------------------------------------------------------


def to_chat_message(message: StoredMessage) -> ChatMessage:
    meta = message.metadata.get(METADATA_KEY)
    decoded = _from_meta(message, meta) if isinstance(meta, dict) else None
    return decoded if decoded is not None else _foreign(message)


def _from_meta(message: StoredMessage, meta: Mapping[str, Any]) -> ChatMessage | None:
    """The ChatMessage the store's metadata describes; ``None`` when it is not metadata this
    store wrote (e.g. written under its key through convodb's own API, or malformed): the
    message is then read as one written through convodb's API."""
    try:
        if "message" in meta:
            return ChatMessage.model_validate(meta["message"])
        data = _decoded(
            message.role,
            message.content,
            message.tool_calls or (),
            message.tool_call_id,
            message.tool_name,
            meta,
        )
        return ChatMessage.model_validate(data)
    except (LookupError, TypeError, ValueError, AttributeError):  # pydantic's: ValueError
        return None


def _decoded(
    role: str,
    content: str | Sequence[Part] | None,
    calls: Sequence[ToolCall],
    tool_call_id: str | None,
    tool_name: str | None,
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``model_dump(mode="json")`` of the ChatMessage a convodb message stands for."""
    parts: Sequence[Part] = (TextPart(text=content),) if isinstance(content, str) else content or ()
    refs = meta.get("blocks")
    blocks: list[Any] = []
    if refs is None:
        blocks = [b for b in map(_block_of_part, parts) if b is not None]
    else:
        for ref in refs:
            if "block" in ref:
                blocks.append(ref["block"])
            elif "part" in ref:
                blocks.append({**(_block_of_part(parts[ref["part"]]) or {}), **ref.get("rest", {})})
            else:
                call = calls[ref["call"]]
                arguments = call.arguments if ref.get("raw") else json.loads(call.arguments)
                blocks.append(
                    {
                        "block_type": "tool_call",
                        "tool_call_id": call.id,
                        "tool_name": call.name,
                        "tool_kwargs": arguments,
                        **ref.get("rest", {}),
                    }
                )
    kwargs = dict(meta.get("kwargs", {}))
    moved = meta.get("fields", ())
    if "tool_call_id" in moved:
        kwargs["tool_call_id"] = tool_call_id
    if "name" in moved:
        kwargs["name"] = tool_name
    if "kwargs_calls" in meta:
        kwargs["tool_calls"] = [
            entry["item"] if "item" in entry else _openai_call(calls[entry["call"]], entry["rest"])
            for entry in meta["kwargs_calls"]
        ]
    return {"role": meta.get("role", role), "additional_kwargs": kwargs, "blocks": blocks}


def _openai_call(call: ToolCall, rest: Mapping[str, Any]) -> dict[str, Any]:
    function = {**rest.get("function", {}), "name": call.name, "arguments": call.arguments}
    return {**rest, "id": call.id, "function": function}


def _block_of_part(part: Part) -> dict[str, Any] | None:
    """The LlamaIndex block (as JSON) a convodb part reads as; ``None`` for a part that has
    no block (reasoning, provider items, a file id)."""
    if isinstance(part, TextPart):
        return {"block_type": "text", "text": part.text}
    if isinstance(part, ImagePart) and (part.data is not None or part.url is not None):
        return {
            "block_type": "image",
            "image": part.data,
            "url": part.url,
            "image_mimetype": part.media_type,
            "detail": part.detail,
        }
    if isinstance(part, FilePart) and (part.data is not None or part.url is not None):
        return {
            "block_type": "document",
            "data": part.data,
            "url": part.url,
            "title": part.filename,
            "document_mimetype": part.media_type,
        }
    if isinstance(part, AudioPart) and part.data is not None:
        return {"block_type": "audio", "audio": part.data, "format": part.format}
    if isinstance(part, ThinkingPart):
        return {
            "block_type": "thinking",
            "content": part.thinking,
            "additional_information": {"signature": part.signature},
        }
    return None


def _foreign(message: StoredMessage) -> ChatMessage:
    """A message written through convodb's own API, not this store, as LlamaIndex would
    have it: its parts as blocks, its tool calls as tool-call blocks."""
    data = _decoded(message.role, message.content, (), None, None, {"blocks": None})
    for call in message.tool_calls or ():
        try:
            arguments: Any = json.loads(call.arguments)
        except ValueError:
            arguments = call.arguments
        if not isinstance(arguments, dict):
            arguments = call.arguments
        data["blocks"].append(
            {
                "block_type": "tool_call",
                "tool_call_id": call.id,
                "tool_name": call.name,
                "tool_kwargs": arguments,
            }
        )
    if message.role == "tool":
        data["additional_kwargs"]["tool_call_id"] = message.tool_call_id
        if message.tool_name is not None:
            data["additional_kwargs"]["name"] = message.tool_name
    return ChatMessage.model_validate(data)
