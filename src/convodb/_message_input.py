"""Messages to append, validated and normalised before anything is written.

A message's content is text or a list of parts (see ``convodb._parts``). Every part is
checked here, whatever its origin (a ``from_*`` format, a dict from an HTTP body, a record):
a known ``type`` with its own fields, exactly one source for a medium, base64 that decodes,
a media type on the allow-list that matches the bytes (an API rejects an image whose bytes
are not the type it is sent as), text that every database stores, and the role the part
belongs to. Binary data leaves the part here: it becomes an :class:`AttachmentInput`,
addressed by its SHA-256, and the part keeps the digest, the size and what could be read
from the bytes (an image's width and height, a PDF's page count) for token counting and
placeholders.
"""

from __future__ import annotations

import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ._media import image_size, pdf_pages
from ._models import ROLES, TOOL_FIELD_LENGTH
from ._parts import (
    AUDIO_FORMATS,
    FILE_MEDIA_TYPES,
    IMAGE_MEDIA_TYPES,
    PART_TYPES,
    AudioPart,
    FilePart,
    ImagePart,
    Part,
    ProviderItemPart,
    ReasoningPart,
    RedactedThinkingPart,
    TextPart,
    ThinkingPart,
    parse_data_url,
    part_to_dict,
)
from ._records import NewMessage, ToolCall
from ._validation import (
    Limits,
    check_json,
    check_json_text_depth,
    check_key,
    check_metadata,
    check_text,
)
from .errors import LimitExceededError, ValidationError

__all__ = [
    "AUDIO_MEDIA_TYPES",
    "AttachmentInput",
    "MessageInput",
    "check_batch",
    "check_message",
    "check_user_message",
]

_MESSAGE_KEYS = frozenset(
    {"role", "content", "tool_calls", "tool_name", "tool_call_id", "metadata", "key"}
)
_TOOL_CALL_KEYS = frozenset({"id", "name", "arguments"})

# What a caller may set on each part type; the rest of a part's fields are convodb's.
_INPUT_FIELDS: dict[str, frozenset[str]] = {
    "text": frozenset({"text"}),
    "image": frozenset({"url", "data", "media_type", "file_id", "detail"}),
    "file": frozenset({"url", "data", "media_type", "file_id", "filename"}),
    "audio": frozenset({"data", "format"}),
    "thinking": frozenset({"thinking", "signature"}),
    "redacted_thinking": frozenset({"data"}),
    "reasoning": frozenset({"id", "summary", "encrypted_content"}),
    "provider_item": frozenset({"provider", "item"}),
}
_DERIVED_FIELDS = frozenset({"attachment", "size", "width", "height", "pages"})
_MEDIA_ROLES = ("user", "assistant", "tool")
_ROLES_OF: dict[str, tuple[str, ...]] = {
    "text": ROLES,
    "image": _MEDIA_ROLES,
    "file": _MEDIA_ROLES,
    "audio": _MEDIA_ROLES,
    "thinking": ("assistant",),
    "redacted_thinking": ("assistant",),
    "reasoning": ("assistant",),
    "provider_item": ("assistant",),
}
AUDIO_MEDIA_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}
"""The media type an audio part's attachment is stored under, by its ``format``."""
_DETAILS = ("auto", "low", "high")
_URL_LENGTH = 8192
# The first bytes of each image type (WebP: RIFF, a size, then WEBP at offset 8).
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


@dataclass(frozen=True, slots=True)
class AttachmentInput:
    """Binary content of a part, stored once per conversation under its digest."""

    sha256: str
    media_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class MessageInput:
    """A validated message, ready to insert."""

    role: str
    content: str | tuple[Part, ...] | None
    """Text, or parts without their binary data (see ``attachments``)."""
    tool_calls: list[dict[str, str]] | None
    tool_name: str | None
    tool_call_id: str | None
    metadata: dict[str, Any]
    key: str | None
    attachments: tuple[AttachmentInput, ...] = ()
    """The binary data of the parts, one per distinct digest."""

    @property
    def parts(self) -> list[dict[str, Any]] | None:
        """The parts as stored (JSON), or ``None`` for text content."""
        if isinstance(self.content, tuple):
            return [part_to_dict(p) for p in self.content]
        return None


def check_message(
    field: str, message: NewMessage | Mapping[str, Any], limits: Limits
) -> MessageInput:
    """Validate one message to append and normalise it."""
    if isinstance(message, NewMessage):
        get = message.__getattribute__
    elif isinstance(message, Mapping):
        unknown = set(message) - _MESSAGE_KEYS
        if unknown:
            raise ValidationError(
                field,
                f"unknown field(s) {sorted(map(str, unknown))}; allowed: {sorted(_MESSAGE_KEYS)}",
            )
        if "role" not in message:
            raise ValidationError(f"{field}.role", "is required")
        get = message.get
    else:
        raise ValidationError(
            field, f"must be a NewMessage or a mapping, not {type(message).__name__}"
        )

    role = get("role")
    if role not in ROLES:
        raise ValidationError(f"{field}.role", f"must be one of {list(ROLES)}; got {role!r}")

    raw_calls = get("tool_calls")
    tool_calls = _check_tool_calls(f"{field}.tool_calls", raw_calls, limits) if raw_calls else None
    if tool_calls and role != "assistant":
        raise ValidationError(
            f"{field}.tool_calls", f"only assistant messages carry tool calls, not {role}"
        )

    content = get("content")
    size = 0
    attachments: tuple[AttachmentInput, ...] = ()
    if content is None:
        if not tool_calls:
            raise ValidationError(
                f"{field}.content",
                "is required (only an assistant message with tool calls may omit it)",
            )
    elif isinstance(content, str):
        content = check_text(f"{field}.content", content)
        size = len(content) if content.isascii() else len(content.encode("utf-8"))
    else:
        content, attachments, size = _check_parts(
            f"{field}.content", content, role, limits, keep_data=False
        )

    tool_name = get("tool_name")
    tool_call_id = get("tool_call_id")
    if role == "tool":
        if tool_call_id is None:
            raise ValidationError(
                f"{field}.tool_call_id",
                "is required on a tool message: the id of the call it answers",
            )
        tool_call_id = _check_tool_field(f"{field}.tool_call_id", tool_call_id)
        if tool_name is not None:
            tool_name = _check_tool_field(f"{field}.tool_name", tool_name)
    else:
        for name, value in (("tool_call_id", tool_call_id), ("tool_name", tool_name)):
            if value is not None:
                raise ValidationError(f"{field}.{name}", f"only tool messages carry it, not {role}")

    for call in tool_calls or ():
        size += sum(len(v.encode("utf-8")) for v in call.values())
    if size > limits.max_message_bytes:
        raise LimitExceededError(
            field,
            f"is {size} bytes (content and tool calls, UTF-8); the limit is "
            f"{limits.max_message_bytes}",
            limit=limits.max_message_bytes,
        )

    return MessageInput(
        role=role,
        content=content,
        tool_calls=tool_calls,
        tool_name=tool_name,
        tool_call_id=tool_call_id,
        metadata=check_metadata(f"{field}.metadata", get("metadata"), limits),
        key=check_key(f"{field}.key", get("key")),
        attachments=attachments,
    )


def check_batch(
    messages: Sequence[NewMessage | Mapping[str, Any]], limits: Limits
) -> list[MessageInput]:
    """Validate a whole batch before anything is written."""
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
        raise ValidationError(
            "messages", f"must be a list of messages, not {type(messages).__name__}"
        )
    if len(messages) > limits.max_batch_messages:
        raise LimitExceededError(
            "messages",
            f"has {len(messages)} messages; the limit is {limits.max_batch_messages} per append",
            limit=limits.max_batch_messages,
        )
    checked = [check_message(f"messages[{i}]", m, limits) for i, m in enumerate(messages)]
    seen: dict[str, int] = {}
    for i, m in enumerate(checked):
        if m.key is not None:
            if m.key in seen:
                raise ValidationError(
                    f"messages[{i}].key", f"repeats the key of messages[{seen[m.key]}]: {m.key!r}"
                )
            seen[m.key] = i
    return checked


def check_user_message(value: object, limits: Limits) -> str | tuple[Part, ...] | None:
    """The new user message of an agent-input request: text or parts, sent and not stored,
    so parts keep their ``data``."""
    if value is None:
        return None
    field = "user_message"
    result: str | tuple[Part, ...]
    if isinstance(value, str):
        result = check_text(field, value)
        size = _utf8(result)
    else:
        result, _, size = _check_parts(field, value, "user", limits, keep_data=True)
    if size > limits.max_message_bytes:
        raise LimitExceededError(
            field,
            f"is {size} bytes (UTF-8); the limit is {limits.max_message_bytes}",
            limit=limits.max_message_bytes,
        )
    return result


# -- parts ----------------------------------------------------------------------------------


def _check_parts(
    field: str, value: object, role: str, limits: Limits, *, keep_data: bool
) -> tuple[tuple[Part, ...], tuple[AttachmentInput, ...], int]:
    """The parts, their attachments (distinct digests) and the UTF-8 size of their text."""
    if isinstance(value, bytes | Mapping) or not isinstance(value, Sequence):
        raise ValidationError(
            field, f"must be a string or a list of content parts, not {type(value).__name__}"
        )
    if not value:
        raise ValidationError(field, "must not be an empty list: give text, parts, or omit it")
    if len(value) > limits.max_parts:
        raise LimitExceededError(
            field,
            f"has {len(value)} parts; the limit is {limits.max_parts}",
            limit=limits.max_parts,
        )
    parts: list[Part] = []
    attachments: dict[str, AttachmentInput] = {}
    size = 0
    for i, raw in enumerate(value):
        where = f"{field}[{i}]"
        part, attachment, part_size = _check_part(where, _part_fields(where, raw), role, limits)
        if attachment is not None:
            attachments.setdefault(attachment.sha256, attachment)
            if not keep_data:
                part = replace(part, data=None)  # type: ignore[arg-type]
        parts.append(part)
        size += part_size
    return tuple(parts), tuple(attachments.values()), size


def _part_fields(field: str, raw: object) -> dict[str, Any]:
    """The part's fields as a dict: a record's, or a mapping's after checking its keys."""
    if isinstance(raw, tuple(PART_TYPES.values())):
        data = part_to_dict(raw)  # type: ignore[arg-type]
    elif isinstance(raw, Mapping):
        data = dict(raw)
    else:
        raise ValidationError(
            field, f"must be a content part (a record or a dict), not {type(raw).__name__}"
        )
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in _INPUT_FIELDS:
        raise ValidationError(
            f"{field}.type", f"must be one of {sorted(_INPUT_FIELDS)}; got {kind!r}"
        )
    allowed = _INPUT_FIELDS[kind]
    derived = _DERIVED_FIELDS & set(data)
    if derived and data.get("data") is None:
        name = sorted(derived)[0]
        raise ValidationError(
            f"{field}.{name}",
            "is set by convodb when it stores the part's data; send the part with its data "
            "(agent-input windows and get_attachment give it)",
        )
    unknown = sorted(map(str, set(data) - allowed - derived - {"type"}))
    if unknown:
        raise ValidationError(
            field, f"has unknown field(s) {unknown}; a {kind} part takes {sorted(allowed)}"
        )
    for name in derived:  # recomputed from the data
        del data[name]
    return data


def _check_part(
    field: str, data: dict[str, Any], role: str, limits: Limits
) -> tuple[Part, AttachmentInput | None, int]:
    kind = data["type"]
    if role not in _ROLES_OF[kind]:
        raise ValidationError(
            f"{field}.type",
            f"a {kind} part belongs in {' or '.join(_ROLES_OF[kind])} messages, not {role}",
        )
    if kind == "text":
        text = _string(field, data, "text", allow_empty=True)
        return TextPart(text=text), None, _utf8(text)
    if kind == "thinking":
        thinking = _string(field, data, "thinking", allow_empty=True)
        signature = _string(field, data, "signature")
        return (
            ThinkingPart(thinking=thinking, signature=signature),
            None,
            _utf8(thinking) + _utf8(signature),
        )
    if kind == "redacted_thinking":
        redacted = _string(field, data, "data")
        return RedactedThinkingPart(data=redacted), None, _utf8(redacted)
    if kind == "reasoning":
        return _reasoning(field, data)
    if kind == "provider_item":
        return _provider_item(field, data, limits)
    return _medium(field, data, limits)


def _reasoning(field: str, data: dict[str, Any]) -> tuple[Part, None, int]:
    item_id = _string(field, data, "id", max_length=TOOL_FIELD_LENGTH)
    summary = data.get("summary") or ()
    if isinstance(summary, str | bytes | Mapping) or not isinstance(summary, Sequence):
        raise ValidationError(
            f"{field}.summary", f"must be a list of strings, not {type(summary).__name__}"
        )
    texts = tuple(check_text(f"{field}.summary[{i}]", t) for i, t in enumerate(summary))
    encrypted = data.get("encrypted_content")
    if encrypted is not None:
        encrypted = _string(field, data, "encrypted_content")
    size = _utf8(item_id) + sum(map(_utf8, texts)) + (_utf8(encrypted) if encrypted else 0)
    return ReasoningPart(id=item_id, summary=texts, encrypted_content=encrypted), None, size


def _provider_item(field: str, data: dict[str, Any], limits: Limits) -> tuple[Part, None, int]:
    provider = data.get("provider")
    if provider not in ("openai", "anthropic"):
        raise ValidationError(
            f"{field}.provider", f"must be 'openai' or 'anthropic'; got {provider!r}"
        )
    item = data.get("item")
    if not isinstance(item, Mapping):
        raise ValidationError(f"{field}.item", f"must be a JSON object, not {type(item).__name__}")
    check_json(f"{field}.item", item, limits, budget=limits.max_message_bytes)
    try:
        encoded = json.dumps(item, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{field}.item", f"must be JSON-serializable: {exc}") from None
    normalised: dict[str, Any] = json.loads(encoded)
    return ProviderItemPart(provider=provider, item=normalised), None, _utf8(encoded)


def _medium(
    field: str, data: dict[str, Any], limits: Limits
) -> tuple[Part, AttachmentInput | None, int]:
    """An image, file or audio part: one source, checked; inline data becomes an attachment."""
    kind = data["type"]
    url = data.get("url")
    if url is not None:
        url = check_text(f"{field}.url", url, max_length=_URL_LENGTH)
        inline = parse_data_url(url)
        if inline is not None and data.get("data") is None:
            # A data: URL (as OpenAI's image_url takes) is inline data: stored as such.
            data["media_type"], data["data"], url = inline[0], inline[1], None
            del data["url"]
        elif not url.startswith(("https://", "http://")):
            raise ValidationError(f"{field}.url", "must be an http(s) URL or a base64 data: URL")
    sources = [name for name in ("url", "data", "file_id") if data.get(name) is not None]
    if kind == "audio":
        if "data" not in sources:
            raise ValidationError(f"{field}.data", "is required: the audio, base64")
        audio_format = data.get("format")
        if audio_format not in AUDIO_FORMATS:
            raise ValidationError(
                f"{field}.format", f"must be one of {list(AUDIO_FORMATS)}; got {audio_format!r}"
            )
        raw = _base64(f"{field}.data", data["data"], limits)
        _check_audio(f"{field}.data", raw, audio_format)
        digest = hashlib.sha256(raw).hexdigest()
        part = AudioPart(data=data["data"], format=audio_format, attachment=digest, size=len(raw))
        return part, AttachmentInput(digest, AUDIO_MEDIA_TYPES[audio_format], raw), 0
    if len(sources) != 1:
        found = f"got {' and '.join(sources)}" if sources else "got none"
        raise ValidationError(
            field,
            "needs exactly one source: url, data (base64, with media_type) or file_id; " + found,
        )
    allowed = IMAGE_MEDIA_TYPES if kind == "image" else FILE_MEDIA_TYPES
    media_type = data.get("media_type")
    if media_type is not None and media_type not in allowed:
        raise ValidationError(
            f"{field}.media_type", f"must be one of {list(allowed)}; got {media_type!r}"
        )
    size = _utf8(url) if url else 0
    file_id = data.get("file_id")
    if file_id is not None:
        file_id = check_text(f"{field}.file_id", file_id, max_length=TOOL_FIELD_LENGTH)
        if not file_id:
            raise ValidationError(f"{field}.file_id", "must not be empty")
        size += _utf8(file_id)
    attachment = None
    values: dict[str, Any] = {"url": url, "file_id": file_id, "media_type": media_type}
    if "data" in sources:
        if media_type is None:
            raise ValidationError(
                f"{field}.media_type", f"is required with data: one of {list(allowed)}"
            )
        raw = _base64(f"{field}.data", data["data"], limits)
        digest = hashlib.sha256(raw).hexdigest()
        values.update(data=data["data"], attachment=digest, size=len(raw))
        attachment = AttachmentInput(digest, media_type, raw)
        if kind == "image":
            _check_image_type(f"{field}.data", raw, media_type)
            dimensions = image_size(media_type, raw)
            if dimensions is not None:
                values["width"], values["height"] = dimensions
        else:
            values["pages"] = _check_document(f"{field}.data", raw, media_type)
    if kind == "image":
        detail = data.get("detail")
        if detail is not None and detail not in _DETAILS:
            raise ValidationError(
                f"{field}.detail", f"must be one of {list(_DETAILS)}; got {detail!r}"
            )
        return ImagePart(detail=detail, **values), attachment, size
    filename = data.get("filename")
    if filename is not None:
        filename = check_text(f"{field}.filename", filename, max_length=TOOL_FIELD_LENGTH)
        size += _utf8(filename)
    return FilePart(filename=filename, **values), attachment, size


def _base64(field: str, value: object, limits: Limits) -> bytes:
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a base64 string, not {type(value).__name__}")
    limit = limits.max_attachment_bytes
    if len(value) // 4 * 3 > limit + 2:  # before decoding: the size base64 of it would have
        raise LimitExceededError(
            field, f"is over {limit} bytes decoded; the limit is {limit}", limit=limit
        )
    try:
        raw = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(
            field, f"must be base64 (RFC 4648, padded, without line breaks): {exc}"
        ) from None
    if not raw:
        raise ValidationError(field, "must not be empty")
    if len(raw) > limit:
        raise LimitExceededError(
            field, f"is {len(raw)} bytes decoded; the limit is {limit}", limit=limit
        )
    return raw


def _check_image_type(field: str, raw: bytes, media_type: str) -> None:
    """The bytes are an image of ``media_type``: APIs reject an image sent as another type."""
    found = next((kind for magic, kind in _IMAGE_MAGIC if raw.startswith(magic)), None)
    if found is None and raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        found = "image/webp"
    if found is None:
        raise ValidationError(field, f"is not an image of any of {list(IMAGE_MEDIA_TYPES)}")
    if found != media_type:
        raise ValidationError(field, f"is a {found} image, not {media_type} as media_type says")


def _check_document(field: str, raw: bytes, media_type: str) -> int | None:
    """A PDF's page count (``None`` when unreadable); text documents must be UTF-8."""
    if media_type == "application/pdf":
        if b"%PDF-" not in raw[:1024]:
            raise ValidationError(field, "is not a PDF (no %PDF- header)")
        return pdf_pages(raw)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(
            field, f"must be UTF-8 text for {media_type}: invalid byte at {exc.start}"
        ) from None
    return None


def _check_audio(field: str, raw: bytes, audio_format: str) -> None:
    if audio_format == "wav":
        if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
            raise ValidationError(field, "is not WAV audio (no RIFF/WAVE header)")
    elif not (raw[:3] == b"ID3" or (len(raw) > 1 and raw[0] == 0xFF and raw[1] & 0xE0 == 0xE0)):
        raise ValidationError(field, "is not MP3 audio (no ID3 tag or frame header)")


def _string(
    field: str,
    data: Mapping[str, Any],
    name: str,
    *,
    allow_empty: bool = False,
    max_length: int | None = None,
) -> str:
    value = data.get(name)
    if value is None:
        raise ValidationError(f"{field}.{name}", "is required")
    text = check_text(f"{field}.{name}", value, max_length=max_length)
    if not text and not allow_empty:
        raise ValidationError(f"{field}.{name}", "must not be empty")
    return text


def _utf8(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


# -- tool calls -----------------------------------------------------------------------------


def _check_tool_field(field: str, value: object) -> str:
    value = check_text(field, value, max_length=TOOL_FIELD_LENGTH)
    if not value:
        raise ValidationError(field, "must not be empty")
    return value


def _check_tool_calls(field: str, value: object, limits: Limits) -> list[dict[str, str]]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise ValidationError(field, f"must be a list of tool calls, not {type(value).__name__}")
    if len(value) > limits.max_tool_calls:
        raise LimitExceededError(
            field,
            f"has {len(value)} calls; the limit is {limits.max_tool_calls}",
            limit=limits.max_tool_calls,
        )
    calls: list[dict[str, str]] = []
    ids: set[str] = set()
    for i, call in enumerate(value):
        where = f"{field}[{i}]"
        if isinstance(call, ToolCall):
            raw: Mapping[str, Any] = call.to_dict()
        elif isinstance(call, Mapping):
            raw = call
            unknown = set(raw) - _TOOL_CALL_KEYS
            if unknown:
                raise ValidationError(
                    where,
                    f"unknown field(s) {sorted(map(str, unknown))}; a tool call has "
                    "id, name and arguments (convert provider shapes with convodb.formats)",
                )
        else:
            raise ValidationError(
                where, f"must be a ToolCall or a mapping, not {type(call).__name__}"
            )
        call_id = _check_tool_field(f"{where}.id", raw.get("id"))
        if call_id in ids:
            raise ValidationError(f"{where}.id", f"repeats an earlier call id: {call_id!r}")
        ids.add(call_id)
        calls.append(
            {
                "id": call_id,
                "name": _check_tool_field(f"{where}.name", raw.get("name")),
                "arguments": check_text(f"{where}.arguments", raw.get("arguments")),
            }
        )
        check_json_text_depth(f"{where}.arguments", calls[-1]["arguments"], limits.max_json_depth)
    return calls
