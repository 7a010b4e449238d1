"""Content parts: what a message carries beyond plain text.

A message's ``content`` is a string, as before, or a list of typed parts:

==================== ========================================== ==========================
type                 fields                                     roles
==================== ========================================== ==========================
``text``             ``text``                                   every role
``image``            one of ``url``, ``data`` (base64) with     user, assistant, tool
                     ``media_type``, ``file_id``; ``detail``
``file``             one of ``url``, ``data`` with              user, assistant, tool
                     ``media_type``, ``file_id``; ``filename``
``audio``            ``data`` (base64) and ``format``           user, assistant, tool
``thinking``         ``thinking``, ``signature`` (Anthropic)    assistant
``redacted_thinking`` ``data`` (Anthropic)                      assistant
``reasoning``        ``id``, ``summary``, ``encrypted_content``  assistant
                     (OpenAI Responses)
``provider_item``    ``provider``, ``item`` (verbatim JSON)     assistant
==================== ========================================== ==========================

Media are stored in any role but ``system``; the formats send them where each API takes them
(user messages and tool results) and as placeholders elsewhere (see ``convodb.formats``).

Reasoning is scoped to the provider that produced it: a thinking block's signature, or a
reasoning item's encrypted content, verifies only where it was made, so formats replay it to
that provider, in place and unchanged, and leave it out for the others.

Binary data (``data`` of images, files and audio) is stored once per conversation, addressed
by its SHA-256, apart from the message rows (see ``convodb._service``): a stored part keeps
``attachment`` (the digest), ``size`` and what convodb could read from the data (an image's
``width`` and ``height``, a PDF's ``pages``) and has no ``data`` until a window is formatted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeAlias

__all__ = [
    "AUDIO_FORMATS",
    "FILE_MEDIA_TYPES",
    "IMAGE_MEDIA_TYPES",
    "PART_TYPES",
    "AudioPart",
    "FilePart",
    "ImagePart",
    "Part",
    "ProviderItemPart",
    "ReasoningPart",
    "RedactedThinkingPart",
    "TextPart",
    "ThinkingPart",
    "parse_data_url",
    "part_from_dict",
    "part_to_dict",
    "text_of",
]

IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
"""Images every supported API takes."""
FILE_MEDIA_TYPES = (
    "application/pdf",
    "text/plain",
    "text/markdown",
    "text/csv",
    "text/html",
    "application/json",
)
"""Documents convodb stores; each format sends what its API takes (see ``convodb.formats``)."""
AUDIO_FORMATS = ("wav", "mp3")
"""Audio encodings (OpenAI's ``input_audio`` formats)."""

Detail = Literal["auto", "low", "high"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TextPart:
    """Text."""

    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagePart:
    """An image: by ``url``, inline ``data`` (base64) with its ``media_type``, or a provider's
    ``file_id``."""

    url: str | None = None
    data: str | None = None
    """Base64 of the image. ``None`` on a stored part until its attachment is loaded."""
    media_type: str | None = None
    """One of :data:`IMAGE_MEDIA_TYPES`; required with ``data``."""
    file_id: str | None = None
    """An id the provider's file API gave (sent only to that provider)."""
    detail: Detail | None = None
    """OpenAI's resolution hint."""
    attachment: str | None = None
    """Set by convodb: the SHA-256 (hex) under which ``data`` is stored in the conversation."""
    size: int | None = None
    """Set by convodb: bytes of the decoded data."""
    width: int | None = None
    """Set by convodb from the data's header, when it could read it."""
    height: int | None = None
    type: Literal["image"] = "image"


@dataclass(frozen=True, slots=True, kw_only=True)
class FilePart:
    """A document (a PDF, a text file): by ``url``, inline ``data`` with its ``media_type``, or
    a provider's ``file_id``."""

    url: str | None = None
    data: str | None = None
    """Base64 of the file. ``None`` on a stored part until its attachment is loaded."""
    media_type: str | None = None
    """One of :data:`FILE_MEDIA_TYPES`; required with ``data``."""
    file_id: str | None = None
    filename: str | None = None
    attachment: str | None = None
    """Set by convodb: the SHA-256 (hex) under which ``data`` is stored in the conversation."""
    size: int | None = None
    """Set by convodb: bytes of the decoded data."""
    pages: int | None = None
    """Set by convodb for a PDF whose page count it could read."""
    type: Literal["file"] = "file"


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioPart:
    """Audio input, base64 ``data`` in one of :data:`AUDIO_FORMATS`."""

    data: str | None = None
    """Base64 of the audio. ``None`` on a stored part until its attachment is loaded."""
    format: Literal["wav", "mp3"] | None = None
    attachment: str | None = None
    size: int | None = None
    type: Literal["audio"] = "audio"


@dataclass(frozen=True, slots=True, kw_only=True)
class ThinkingPart:
    """Anthropic extended thinking: replayed to Anthropic unchanged, first in its turn."""

    thinking: str
    signature: str
    type: Literal["thinking"] = "thinking"


@dataclass(frozen=True, slots=True, kw_only=True)
class RedactedThinkingPart:
    """Anthropic thinking the API returned encrypted: replayed to Anthropic unchanged."""

    data: str
    type: Literal["redacted_thinking"] = "redacted_thinking"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReasoningPart:
    """An OpenAI Responses reasoning item: replayed to the Responses API, right before what
    followed it."""

    id: str
    summary: tuple[str, ...] = ()
    """The summary texts (``summary_text`` items), in order."""
    encrypted_content: str | None = None
    """What ``include=["reasoning.encrypted_content"]`` returned (stateless use)."""
    type: Literal["reasoning"] = "reasoning"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderItemPart:
    """Something a provider returned that has no neutral form (a hosted web-search call, ...),
    kept verbatim and replayed only to that provider."""

    provider: Literal["openai", "anthropic"]
    item: dict[str, Any] = field(default_factory=dict)
    type: Literal["provider_item"] = "provider_item"


Part: TypeAlias = (
    TextPart
    | ImagePart
    | FilePart
    | AudioPart
    | ThinkingPart
    | RedactedThinkingPart
    | ReasoningPart
    | ProviderItemPart
)

PART_TYPES: dict[str, type[Part]] = {
    "text": TextPart,
    "image": ImagePart,
    "file": FilePart,
    "audio": AudioPart,
    "thinking": ThinkingPart,
    "redacted_thinking": RedactedThinkingPart,
    "reasoning": ReasoningPart,
    "provider_item": ProviderItemPart,
}
"""Each part type by its ``type`` name."""

_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in PART_TYPES.values()
}


def part_to_dict(part: Part) -> dict[str, Any]:
    """The part as JSON-ready data: ``type`` first, fields that are ``None`` left out."""
    out: dict[str, Any] = {"type": part.type}
    for name in _FIELDS[type(part)]:
        value = getattr(part, name)
        if name != "type" and value is not None:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def part_from_dict(data: Mapping[str, Any]) -> Part:
    """A part from data :func:`part_to_dict` made (stored parts; input goes through
    validation instead)."""
    cls = PART_TYPES[data["type"]]
    values = {k: v for k, v in data.items() if k != "type"}
    if cls is ReasoningPart and "summary" in values:
        values["summary"] = tuple(values["summary"])
    return cls(**values)


def without_data(part: Part) -> Part:
    """The part as stored: binary data that lives in an attachment is left out."""
    if isinstance(part, ImagePart | FilePart | AudioPart) and part.attachment is not None:
        return replace(part, data=None)
    return part


def text_of(content: str | tuple[Part, ...] | None) -> str:
    """The text of a message's content: the string, or its text parts joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p.text for p in content if isinstance(p, TextPart))


_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)(?:;[\w.+-]+=[^;,]*)*;base64,(.*)", re.DOTALL)


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``(media_type, base64)`` of a base64 ``data:`` URL; ``None`` for anything else."""
    match = _DATA_URL.fullmatch(url)
    return (match.group(1).lower(), match.group(2)) if match else None
