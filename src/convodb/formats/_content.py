"""Content parts as every format sees them: where the media is, what a placeholder says.

The API-specific shapes live in each API's module; this module holds what they share, so the
rules in the package docstring are decided once: which ``file_id`` belongs to which provider,
which documents are text, what a placeholder names.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, Literal, NamedTuple, TypeAlias

from .._parts import (
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
    part_from_dict,
)
from .._records import Turn
from ..errors import ValidationError

Content: TypeAlias = str | Sequence[Part | Mapping[str, Any]] | None
"""A message's content as the formats accept it: text, or parts as records or dicts."""
UserMessage: TypeAlias = str | Sequence[Part | Mapping[str, Any]] | None
"""The new user message of a ``to_*`` call: text, or parts as records or dicts."""

REASONING = (ThinkingPart, RedactedThinkingPart, ReasoningPart, ProviderItemPart)
"""Parts scoped to one provider: replayed to it, left out for every other."""
MEDIA = (ImagePart, FilePart, AudioPart)

_PART_CLASSES = tuple(PART_TYPES.values())
_FIELDS = {name: {f.name for f in fields(cls)} for name, cls in PART_TYPES.items()}


def as_part(value: object, field: str) -> Part:
    """A part record from a record or a dict shaped like ``part_to_dict`` output.

    Only the shape is checked (a known ``type``, known fields, required fields present); what
    the values may be (media types, base64, sizes) is the service's validation.

    Raises:
        ValidationError: not a part record, an unknown ``type``, unknown or missing fields.
    """
    if isinstance(value, _PART_CLASSES):
        return value
    if not isinstance(value, Mapping):
        raise ValidationError(
            field, f"must be a content part (a record or a dict), not {type(value).__name__}"
        )
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in PART_TYPES:
        raise ValidationError(f"{field}.type", f"must be one of {sorted(PART_TYPES)}: {kind!r}")
    unknown = sorted(set(value) - _FIELDS[kind])
    if unknown:
        known = ", ".join(sorted(_FIELDS[kind] - {"type"}))
        raise ValidationError(field, f"has unknown fields {unknown}; a {kind} part takes {known}")
    try:
        return part_from_dict(value)
    except TypeError as exc:  # a required field is missing
        raise ValidationError(field, f"is not a whole {kind} part: {exc}") from None


def parts_of(content: Content, field: str = "content") -> list[Part]:
    """Content as a list of parts: a non-empty string is one text part."""
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(text=content)] if content else []
    return [as_part(p, f"{field}[{i}]") for i, p in enumerate(content)]


def user_turns(user_message: UserMessage) -> list[Turn]:
    """The new user message as a message, when there is one.

    Raises:
        ValidationError: a part of it is not shaped like a part (field ``user_message[i]``).
    """
    if user_message is None:
        return []
    if isinstance(user_message, str):
        return [Turn("user", user_message)]
    return [Turn("user", tuple(parts_of(user_message, "user_message")))]


# -- where the bytes are --------------------------------------------------------------------


class Source(NamedTuple):
    """Where a medium's content is: inline base64, a URL, or a provider's file id."""

    kind: Literal["data", "url", "file_id"]
    value: str
    media_type: str | None


def data_url(media_type: str, data: str) -> str:
    return f"data:{media_type};base64,{data}"


def source_of(part: ImagePart | FilePart) -> Source | None:
    """Where the part's content is; ``None`` when it is nowhere yet (an attachment not
    loaded)."""
    if part.data is not None:
        return Source("data", part.data, part.media_type)
    if part.url is not None:
        inline = parse_data_url(part.url)
        if inline is not None:
            return Source("data", inline[1], inline[0])
        return Source("url", part.url, part.media_type)
    if part.file_id is not None:
        return Source("file_id", part.file_id, part.media_type)
    return None


def is_web_url(url: str) -> bool:
    return url.startswith(("https://", "http://"))


def file_id_of(provider: Literal["openai", "anthropic"], source: Source) -> str | None:
    """The file id when it is one ``provider`` gave, else ``None``.

    Parts do not record which provider issued a ``file_id``, so it is read from the id:
    Anthropic's start with ``file_``; OpenAI's (``file-...``, and Azure's ``assistant-...``)
    never do. An id sent to the wrong provider is a 400, so each gets only its own.
    """
    if source.kind != "file_id":
        return None
    anthropic = source.value.startswith("file_")
    return source.value if anthropic == (provider == "anthropic") else None


def is_pdf(source: Source) -> bool:
    if source.media_type is not None:
        return source.media_type == "application/pdf"
    return source.kind == "url" and source.value.split("?", 1)[0].lower().endswith(".pdf")


def is_text_document(media_type: str | None) -> bool:
    return media_type is not None and (
        media_type.startswith("text/") or media_type == "application/json"
    )


def decoded_text(source: Source) -> str | None:
    """The text of an inline text document (``text/*``, JSON); ``None`` when it is not one or
    is not valid base64 of UTF-8."""
    if source.kind != "data" or not is_text_document(source.media_type):
        return None
    try:
        return base64.b64decode(source.value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None


_EXTENSIONS = {
    "application/pdf": ".pdf",
    "text/plain": ".txt",
    "text/markdown": ".md",
    "text/csv": ".csv",
    "text/html": ".html",
    "application/json": ".json",
}


def filename_of(part: FilePart, media_type: str | None) -> str:
    """The part's file name, or ``file`` with the media type's extension (OpenAI wants one
    with inline file data)."""
    return part.filename or "file" + _EXTENSIONS.get(media_type or "", "")


# -- what stands in for a part an API cannot take -------------------------------------------


def placeholder(part: Part, note: str | None = None) -> str:
    """A short text naming a part, e.g. ``[image: image/png, 1024x768]``."""
    details: list[str | None] = []
    if isinstance(part, ImagePart):
        size = f"{part.width}x{part.height}" if part.width and part.height else None
        details = [part.media_type, size]
    elif isinstance(part, FilePart):
        pages = f"{part.pages} pages" if part.pages else None
        details = [part.filename, part.media_type, pages]
    elif isinstance(part, AudioPart):
        details = [part.format]
    if isinstance(part, ImagePart | FilePart):
        if part.url is not None and not part.url.startswith("data:"):
            url = part.url
            details.append(url if len(url) <= 200 else url[:199] + "…")
        elif part.file_id is not None:
            details.append(part.file_id)
    shown = ", ".join(d for d in details if d)
    if note:
        shown = f"{shown}; {note}" if shown else note
    return f"[{part.type}: {shown}]" if shown else f"[{part.type}]"


class Piece(NamedTuple):
    """Text for an API that takes only text here: the text of a part, or a placeholder."""

    text: str
    placeholder: bool = False


def join(pieces: Sequence[Piece]) -> str:
    """Pieces as one text: texts run on (as the model wrote them), placeholders on their own
    lines."""
    out: list[str] = []
    previous: Piece | None = None
    for piece in pieces:
        if previous is not None and (piece.placeholder or previous.placeholder):
            out.append("\n")
        out.append(piece.text)
        previous = piece
    return "".join(out)


def text_pieces(parts: Sequence[Part]) -> list[Piece]:
    """The parts as text: text parts as they are, media as placeholders, provider-scoped
    parts left out."""
    pieces: list[Piece] = []
    for part in parts:
        if isinstance(part, TextPart):
            if part.text:
                pieces.append(Piece(part.text))
        elif not isinstance(part, REASONING):
            pieces.append(Piece(placeholder(part), placeholder=True))
    return pieces
