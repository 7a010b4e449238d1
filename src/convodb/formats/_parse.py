"""Reading API payloads (dicts or SDK objects) for the ``from_*`` functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._parts import Part, TextPart
from .._records import NewMessage, Role, ToolCall
from ..errors import ValidationError


def data(value: Any) -> Any:
    """SDK objects (pydantic models) as plain data; plain data as is."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return value


def items(value: Any, field: str) -> list[Any]:
    """One item or a list of them, as a list of plain data."""
    value = data(value)
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [data(v) for v in value]
    raise ValidationError(field, f"must be a message or a list of them, not {type(value).__name__}")


def mapping(value: Any, field: str) -> Mapping[str, Any]:
    value = data(value)
    if not isinstance(value, Mapping):
        raise ValidationError(field, f"must be an object, not {type(value).__name__}")
    return value


def text(value: Any, field: str, kinds: Mapping[str, str]) -> str | None:
    """Text of a content value: a string, or the text of the parts whose type is in ``kinds``
    (type -> key holding the text), joined."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, Sequence):
        raise ValidationError(field, f"must be a string or a list of parts, not {value!r}")
    texts: list[str] = []
    for i, part in enumerate(value):
        part = mapping(part, f"{field}[{i}]")
        key = kinds.get(str(part.get("type")))
        if key is not None and isinstance(part.get(key), str):
            texts.append(part[key])
    return "".join(texts)


def string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {type(value).__name__}")
    return value


def role(value: Any, field: str) -> Role:
    if value == "developer":  # OpenAI's newer name for system instructions
        return "system"
    if value in ("system", "user", "assistant", "tool"):
        checked: Role = value
        return checked
    raise ValidationError(field, f"must be system, developer, user, assistant or tool: {value!r}")


def content_of(parts: list[Part]) -> str | list[Part]:
    """Parts as message content: one string when they are all text (as before content had
    parts: a text-only message stays a string), else the parts."""
    if all(isinstance(part, TextPart) for part in parts):
        return "".join(part.text for part in parts if isinstance(part, TextPart))
    return parts


def message(
    role: Role,
    content: str | list[Part] | None,
    *,
    tool_calls: list[ToolCall] | None = None,
    tool_call_id: str | None = None,
    tool_name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> NewMessage:
    # Content as parts is issue 10's; until NewMessage.content is declared to take them (a
    # change to convodb._records under way), the fields pass untyped.
    fields: dict[str, Any] = {"role": role, "content": content}
    return NewMessage(
        **fields,
        tool_calls=tool_calls,
        tool_call_id=tool_call_id,
        tool_name=tool_name,
        metadata=metadata,
    )


def assistant(content: str | list[Part] | None, calls: list[ToolCall]) -> NewMessage:
    """An assistant message; its content ``None`` only when it has calls (a stored message
    needs content unless it carries calls)."""
    if isinstance(content, list):
        content = content_of(list(content))
    if not isinstance(content, list):
        content = content or (None if calls else "")
    # Copies: callers reuse their lists.
    return message("assistant", content, tool_calls=list(calls) or None)
