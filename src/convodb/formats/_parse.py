"""Reading API payloads (dicts or SDK objects) for the ``from_*`` functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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


def assistant(texts: list[str], calls: list[ToolCall]) -> NewMessage:
    content = "".join(texts)
    # A stored message needs content unless it carries calls.
    return NewMessage(
        role="assistant",
        content=content or (None if calls else ""),
        tool_calls=list(calls) or None,  # a copy: callers reuse their list
    )
