"""Opaque pagination cursors.

A cursor is URL-safe base64 of a small JSON document naming its list and a position in it.
Callers treat it as opaque, but it travels through their hands and can come back edited,
truncated or forged. :func:`decode_cursor` therefore trusts nothing in it: it returns only
values of the kinds the list declares, each within what every database accepts as a statement
parameter (a ``seq`` from 0 to :data:`~convodb._validation.MAX_SEQ`, a timezone-aware UTC
timestamp, a short string that every database stores), and raises
:class:`~convodb.errors.ValidationError` naming the ``cursor`` field for anything else.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ._models import ID_LENGTH
from ._validation import MAX_SEQ, check_text
from .errors import ValidationError

__all__ = ["decode_cursor", "encode_cursor"]

_VERSION = 1
_MALFORMED = "is malformed; pass back a next_cursor unchanged"

Field = type[Any] | Callable[[Any], Any]
"""What a cursor field holds: ``int`` (a ``seq``), ``str``, ``datetime`` (sent as ISO 8601
text), or a check such as ``check_conversation_id`` that returns the value or raises
``ValidationError``."""


def encode_cursor(kind: str, **position: Any) -> str:
    """A cursor for the list ``kind`` at ``position``; datetimes are sent as ISO 8601 text."""
    document = {"v": _VERSION, "k": kind}
    for name, value in position.items():
        document[name] = value.isoformat() if isinstance(value, datetime) else value
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: object, kind: str, fields: Mapping[str, Field]) -> dict[str, Any]:
    """The position a cursor of the list ``kind`` encodes.

    Args:
        cursor: what the caller passed back.
        kind: the list it must belong to.
        fields: each key the position must have, mapped to what it holds: ``int`` (a ``seq``,
            0 to ``MAX_SEQ``), ``str`` (1 to 64 characters that every database stores),
            ``datetime`` (ISO 8601 text with a UTC offset; returned as an aware UTC datetime)
            or a check function.

    Returns:
        The checked values, by key.

    Raises:
        ValidationError: on the ``cursor`` field, for anything else.
    """
    if not isinstance(cursor, str) or not cursor or len(cursor) > 1024:
        raise ValidationError("cursor", "must be a cursor string returned by a previous page")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        document = json.loads(raw)
    except (binascii.Error, ValueError):  # UnicodeDecodeError and JSONDecodeError included
        raise ValidationError("cursor", _MALFORMED) from None
    if not isinstance(document, dict) or document.get("v") != _VERSION:
        raise ValidationError("cursor", _MALFORMED)
    if document.get("k") != kind:
        raise ValidationError("cursor", f"belongs to another list, not to {kind}")
    return {name: _field(document.get(name), expected) for name, expected in fields.items()}


def _field(value: object, expected: Field) -> Any:
    if expected is int:
        # A seq: bound here, since a number beyond 64 bits fails in the driver, not in SQL.
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEQ:
            return value
    elif expected is str:
        if isinstance(value, str) and 0 < len(value) <= ID_LENGTH and _storable(value):
            return value
    elif expected is datetime:
        if isinstance(value, str) and len(value) <= ID_LENGTH:
            try:
                at = datetime.fromisoformat(value)
                # Compared with timezone-aware columns: a naive time has no meaning there.
                if at.tzinfo is not None and at.utcoffset() is not None:
                    return at.astimezone(UTC)
            except (ValueError, OverflowError):  # OverflowError: year 1 at +01:00 is year 0
                pass
    elif not isinstance(expected, type):
        try:
            return expected(value)
        except ValidationError:
            pass
    raise ValidationError("cursor", _MALFORMED)


def _storable(value: str) -> bool:
    try:
        check_text("cursor", value)
    except ValidationError:
        return False
    return True
