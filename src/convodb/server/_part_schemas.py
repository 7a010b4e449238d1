"""The JSON shapes of content parts, as pydantic models: one per part type and direction.

Input parts take the fields a caller may set (the service's ``_INPUT_FIELDS``); output parts
add what convodb derived from the data. Types and required fields only: a medium's single
source, media types matching the bytes, base64, sizes and which role may carry a part are the
service's rules, reported as invalid-input problems whose ``field`` is the part's
(``messages[0].content[1].data``). The message and request models of ``_schemas`` hold them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag
from pydantic.json_schema import SkipJsonSchema

from convodb import Part

# Not exported by convodb (yet): the part serializer and the media-type allow-lists, which
# the schema documents. With MAX_SEQ in _schemas, the server's only imports of private modules.
from convodb._message_input import AUDIO_MEDIA_TYPES
from convodb._parts import FILE_MEDIA_TYPES, IMAGE_MEDIA_TYPES, part_to_dict

__all__ = [
    "ATTACHMENT_MEDIA_TYPES",
    "PART_MODELS",
    "AudioPartIn",
    "AudioPartOut",
    "ContentIn",
    "FilePartIn",
    "FilePartOut",
    "ImagePartIn",
    "ImagePartOut",
    "PartIn",
    "PartOut",
    "ProviderItemPartIn",
    "ProviderItemPartOut",
    "ReasoningPartIn",
    "ReasoningPartOut",
    "RedactedThinkingPartIn",
    "RedactedThinkingPartOut",
    "StrictModel",
    "TextPartIn",
    "TextPartOut",
    "ThinkingPartIn",
    "ThinkingPartOut",
    "parts_out",
]

ATTACHMENT_MEDIA_TYPES = (*IMAGE_MEDIA_TYPES, *FILE_MEDIA_TYPES, *AUDIO_MEDIA_TYPES.values())
"""Every media type an attachment is stored (and served) as."""


class StrictModel(BaseModel):
    """The base of every request and part model: a field the API does not know is a 422
    naming it, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


def _listed(values: Iterable[str]) -> str:
    return ", ".join(f"`{v}`" for v in values)


def _absent(value: object) -> bool:
    return value is None


def _set_by_convodb(description: str) -> Any:
    """An output field that is left out when it has no value, never ``null``: what
    ``part_to_dict`` writes, and what the schema (``SkipJsonSchema[None]``) says."""
    return Field(default=None, exclude_if=_absent, description=description)


_URL = "An http(s) URL, which the model's API fetches, or a base64 `data:` URL (stored as `data`)."
_DATA = (
    "The bytes, base64 (RFC 4648, padded, no line breaks), at most `Limits.max_attachment_bytes` "
    "decoded. Stored once per conversation as an attachment: read back as `attachment`."
)
_FILE_ID = "An id from a provider's file API (sent to that provider only)."
_ATTACHMENT = (
    "The SHA-256 (hex) of the data: `GET /v1/conversations/{conversation_id}/attachments/"
    "{attachment}` returns it. Messages read back carry this instead of `data`."
)
_SIZE = "Bytes of the decoded data."


class TextPartIn(StrictModel):
    """Text, in a message of any role."""

    type: Literal["text"] = Field(description="The part type.")
    text: str = Field(description="The text (may be empty).")


class ImagePartIn(StrictModel):
    """An image (user, assistant or tool messages): exactly one of `url`, `data` with
    `media_type`, or `file_id`."""

    type: Literal["image"] = Field(description="The part type.")
    url: str | None = Field(default=None, description=_URL)
    data: str | None = Field(default=None, description=_DATA)
    media_type: str | None = Field(
        default=None,
        description=f"Required with `data`, and must be what the bytes are: "
        f"{_listed(IMAGE_MEDIA_TYPES)}.",
    )
    file_id: str | None = Field(default=None, description=_FILE_ID)
    detail: Literal["auto", "low", "high"] | None = Field(
        default=None, description="OpenAI's resolution hint."
    )


class FilePartIn(StrictModel):
    """A document (user, assistant or tool messages): exactly one of `url`, `data` with
    `media_type`, or `file_id`."""

    type: Literal["file"] = Field(description="The part type.")
    url: str | None = Field(default=None, description=_URL)
    data: str | None = Field(default=None, description=_DATA)
    media_type: str | None = Field(
        default=None,
        description=f"Required with `data`: {_listed(FILE_MEDIA_TYPES)}. A PDF needs its "
        "`%PDF-` header; text types must be UTF-8.",
    )
    file_id: str | None = Field(default=None, description=_FILE_ID)
    filename: str | None = Field(default=None, description="The name shown to the model.")


class AudioPartIn(StrictModel):
    """Audio input (user, assistant or tool messages), as base64 `data`."""

    type: Literal["audio"] = Field(description="The part type.")
    data: str = Field(description=_DATA)
    format: Literal["wav", "mp3"] = Field(description="The encoding; must match the bytes.")


class ThinkingPartIn(StrictModel):
    """Anthropic extended thinking (assistant messages): replayed to Anthropic unchanged, first
    in its turn; left out for other APIs."""

    type: Literal["thinking"] = Field(description="The part type.")
    thinking: str = Field(description="The thinking text, as the API returned it.")
    signature: str = Field(description="The API's signature of it, as returned.")


class RedactedThinkingPartIn(StrictModel):
    """Anthropic thinking returned encrypted (assistant messages): replayed to Anthropic
    unchanged; left out for other APIs."""

    type: Literal["redacted_thinking"] = Field(description="The part type.")
    data: str = Field(description="The encrypted thinking, as returned (not an attachment).")


class ReasoningPartIn(StrictModel):
    """An OpenAI Responses reasoning item (assistant messages): replayed to the Responses API
    right before what followed it; left out for other APIs."""

    type: Literal["reasoning"] = Field(description="The part type.")
    id: str = Field(description="The item's id (`rs_...`).")
    summary: list[str] = Field(
        default_factory=list, description="The `summary_text` texts, in order."
    )
    encrypted_content: str | None = Field(
        default=None,
        description='What `include=["reasoning.encrypted_content"]` returned (stateless use).',
    )


class ProviderItemPartIn(StrictModel):
    """Something a provider returned that has no neutral form, e.g. a hosted web-search call
    (assistant messages): kept verbatim, replayed in place to that provider only."""

    type: Literal["provider_item"] = Field(description="The part type.")
    provider: Literal["openai", "anthropic"] = Field(description="Whose item it is.")
    item: dict[str, Any] = Field(description="The item or block, verbatim.")


class TextPartOut(StrictModel):
    """Text."""

    type: Literal["text"] = Field(description="The part type.")
    text: str = Field(description="The text.")


class ImagePartOut(StrictModel):
    """An image. Stored data comes back as `attachment`, never as `data`."""

    type: Literal["image"] = Field(description="The part type.")
    url: str | SkipJsonSchema[None] = _set_by_convodb("The http(s) URL sent, if any.")
    media_type: str | SkipJsonSchema[None] = _set_by_convodb("The data's media type.")
    file_id: str | SkipJsonSchema[None] = _set_by_convodb(_FILE_ID)
    detail: Literal["auto", "low", "high"] | SkipJsonSchema[None] = _set_by_convodb(
        "OpenAI's resolution hint."
    )
    attachment: str | SkipJsonSchema[None] = _set_by_convodb(_ATTACHMENT)
    size: int | SkipJsonSchema[None] = _set_by_convodb(_SIZE)
    width: int | SkipJsonSchema[None] = _set_by_convodb(
        "Pixels, from the image's header, when convodb could read it."
    )
    height: int | SkipJsonSchema[None] = _set_by_convodb("Pixels, as `width`.")


class FilePartOut(StrictModel):
    """A document. Stored data comes back as `attachment`, never as `data`."""

    type: Literal["file"] = Field(description="The part type.")
    url: str | SkipJsonSchema[None] = _set_by_convodb("The http(s) URL sent, if any.")
    media_type: str | SkipJsonSchema[None] = _set_by_convodb("The data's media type.")
    file_id: str | SkipJsonSchema[None] = _set_by_convodb(_FILE_ID)
    filename: str | SkipJsonSchema[None] = _set_by_convodb("The name shown to the model.")
    attachment: str | SkipJsonSchema[None] = _set_by_convodb(_ATTACHMENT)
    size: int | SkipJsonSchema[None] = _set_by_convodb(_SIZE)
    pages: int | SkipJsonSchema[None] = _set_by_convodb(
        "A PDF's page count, when convodb could read it."
    )


class AudioPartOut(StrictModel):
    """Audio. Its data comes back as `attachment`, never as `data`."""

    type: Literal["audio"] = Field(description="The part type.")
    format: Literal["wav", "mp3"] = Field(description="The encoding.")
    attachment: str = Field(description=_ATTACHMENT)
    size: int = Field(description=_SIZE)


class ThinkingPartOut(StrictModel):
    """Anthropic extended thinking, exactly as received."""

    type: Literal["thinking"] = Field(description="The part type.")
    thinking: str = Field(description="The thinking text.")
    signature: str = Field(description="The API's signature of it.")


class RedactedThinkingPartOut(StrictModel):
    """Anthropic's encrypted thinking, exactly as received."""

    type: Literal["redacted_thinking"] = Field(description="The part type.")
    data: str = Field(description="The encrypted thinking.")


class ReasoningPartOut(StrictModel):
    """An OpenAI Responses reasoning item."""

    type: Literal["reasoning"] = Field(description="The part type.")
    id: str = Field(description="The item's id.")
    summary: list[str] = Field(description="The `summary_text` texts, in order.")
    encrypted_content: str | SkipJsonSchema[None] = _set_by_convodb(
        "The encrypted reasoning, when it was stored."
    )


class ProviderItemPartOut(StrictModel):
    """A provider's item, verbatim."""

    type: Literal["provider_item"] = Field(description="The part type.")
    provider: Literal["openai", "anthropic"] = Field(description="Whose item it is.")
    item: dict[str, Any] = Field(description="The item or block, verbatim.")


PartIn: TypeAlias = Annotated[
    TextPartIn
    | ImagePartIn
    | FilePartIn
    | AudioPartIn
    | ThinkingPartIn
    | RedactedThinkingPartIn
    | ReasoningPartIn
    | ProviderItemPartIn,
    Field(discriminator="type"),
]
"""A content part to store or send, by its `type`."""
PartOut: TypeAlias = Annotated[
    TextPartOut
    | ImagePartOut
    | FilePartOut
    | AudioPartOut
    | ThinkingPartOut
    | RedactedThinkingPartOut
    | ReasoningPartOut
    | ProviderItemPartOut,
    Field(discriminator="type"),
]
"""A stored content part, by its `type`."""
PART_MODELS: dict[str, tuple[type[StrictModel], type[StrictModel]]] = {
    "text": (TextPartIn, TextPartOut),
    "image": (ImagePartIn, ImagePartOut),
    "file": (FilePartIn, FilePartOut),
    "audio": (AudioPartIn, AudioPartOut),
    "thinking": (ThinkingPartIn, ThinkingPartOut),
    "redacted_thinking": (RedactedThinkingPartIn, RedactedThinkingPartOut),
    "reasoning": (ReasoningPartIn, ReasoningPartOut),
    "provider_item": (ProviderItemPartIn, ProviderItemPartOut),
}
"""The input and output model of each part type, by its ``type`` name."""


def _content_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "text"
    return "parts" if isinstance(value, list) else None


# Text or parts, chosen by the value's JSON type, so that a bad part is reported once, at its
# place (`body.messages.0.content.parts.1.image.url`), not also as "not a string".
ContentIn: TypeAlias = Annotated[
    Annotated[str, Tag("text")] | Annotated[list[PartIn], Tag("parts")],
    Discriminator(
        _content_kind,
        custom_error_type="content_type",
        custom_error_message="Input should be a string or a list of content parts",
    ),
]


def parts_out(parts: Sequence[Part]) -> list[dict[str, Any]]:
    """Stored parts as ``PartOut`` JSON: binary data as its ``attachment``, never ``data``."""
    return [part_to_dict(p) for p in parts]
