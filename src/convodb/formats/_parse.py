"""Reading API payloads (dicts or SDK objects) for the ``from_*`` functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._parts import FilePart, ImagePart, Part, TextPart, parse_data_url
from .._records import NewMessage, Role, ToolCall
from ..errors import ValidationError

_MEDIA_TYPES = {
    ".pdf": "application/pdf",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".csv": "text/csv",
    ".html": "text/html",
    ".json": "application/json",
}


def data(value: Any) -> Any:
    """SDK objects (pydantic models) as plain data, as the SDKs send them in a request (the
    fields the API set, by their API names); plain data as is."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        exclude = getattr(value, "__api_exclude__", None)
        return dump(mode="json", by_alias=True, exclude_unset=True, exclude=exclude)
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


def string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {type(value).__name__}")
    return value


def optional_string(value: Any, field: str) -> str | None:
    return None if value is None else string(value, field)


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


def image(url: str | None, file_id: str | None, detail: Any, field: str = "image") -> ImagePart:
    """An image from an OpenAI image content part (a ``data:`` URL becomes inline data)."""
    hint = detail if detail in ("auto", "low", "high") else None
    if url:
        inline = parse_data_url(url)
        if inline is not None:
            return ImagePart(data=inline[1], media_type=inline[0], detail=hint)
        return ImagePart(url=url, detail=hint)
    if file_id:
        return ImagePart(file_id=file_id, detail=hint)
    raise ValidationError(field, "needs image_url or file_id")


def file(item: Mapping[str, Any], field: str, *, default: str) -> FilePart:
    """A file from an OpenAI file content part (``file_data``, ``file_url`` or ``file_id``).

    ``file_data`` is a ``data:`` URL, or bare base64 whose media type is read from the file
    name, else ``default``.
    """
    filename = optional_string(item.get("filename"), f"{field}.filename")
    file_data = optional_string(item.get("file_data"), f"{field}.file_data")
    if file_data:
        inline = parse_data_url(file_data)
        if inline is not None:
            return FilePart(data=inline[1], media_type=inline[0], filename=filename)
        suffix = "." + filename.rsplit(".", 1)[-1].lower() if filename and "." in filename else ""
        media_type = _MEDIA_TYPES.get(suffix, default)
        return FilePart(data=file_data, media_type=media_type, filename=filename)
    file_url = optional_string(item.get("file_url"), f"{field}.file_url")
    if file_url:
        return FilePart(url=file_url, filename=filename)
    file_id = optional_string(item.get("file_id"), f"{field}.file_id")
    if file_id:
        return FilePart(file_id=file_id, filename=filename)
    raise ValidationError(field, "needs file_data, file_url or file_id")


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
