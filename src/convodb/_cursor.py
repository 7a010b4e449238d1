"""Opaque pagination cursors.

A cursor is URL-safe base64 of a small JSON document. Callers treat it as opaque; the
service checks it back in and names the ``cursor`` field when it is malformed, so a
hand-edited or truncated cursor is a validation error, never a server error.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .errors import ValidationError

__all__ = ["decode_cursor", "encode_cursor"]

_VERSION = 1


def encode_cursor(kind: str, **position: Any) -> str:
    document = {"v": _VERSION, "k": kind, **position}
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: object, kind: str, fields: dict[str, type]) -> dict[str, Any]:
    """The position a cursor encodes; ``fields`` maps each expected key to its type."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > 1024:
        raise ValidationError("cursor", "must be a cursor string returned by a previous page")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        document = json.loads(raw)
    except (binascii.Error, ValueError):
        raise ValidationError("cursor", "is malformed; pass back a next_cursor unchanged") from None
    if not isinstance(document, dict) or document.get("v") != _VERSION:
        raise ValidationError("cursor", "is malformed; pass back a next_cursor unchanged")
    if document.get("k") != kind:
        raise ValidationError("cursor", f"belongs to another list, not to {kind}")
    for name, expected in fields.items():
        value = document.get(name)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ValidationError("cursor", "is malformed; pass back a next_cursor unchanged")
    return document
