"""Input rules: every value that reaches the database passes through here first.

Each check raises :class:`~convodb.errors.ValidationError` naming the field and the limit, and
runs before any write, so bad input stores nothing. Text must be storable identically on every
database: PostgreSQL cannot store NUL in ``text`` or ``jsonb`` and UTF-8 cannot encode a lone
surrogate, so both are rejected everywhere rather than altered.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, cast

from ._models import ID_LENGTH, KEY_LENGTH, TITLE_LENGTH, USER_ID_LENGTH
from .errors import LimitExceededError, ValidationError

__all__ = ["CONVERSATION_ID_PATTERN", "MAX_SEQ", "Limits"]

CONVERSATION_ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._:-]{{0,{ID_LENGTH - 1}}}$"
"""What a conversation id looks like (an interface may publish it, e.g. in an API schema)."""
_ID_CHARACTERS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
MiB = 1024 * 1024
MAX_JSON_DEPTH = 200
"""The highest ``Limits.max_json_depth``. JSON encoders refuse deep values (pydantic's, which
the HTTP service uses, stops at 255 levels, and a response wraps a value in a few levels more):
a value stored deeper could never be read back over HTTP."""
MAX_SEQ = 2**62
"""The largest ``seq`` (and position) accepted: far beyond any conversation, well inside the
64-bit integers every database and driver binds (asyncpg rejects a larger Python int in the
client, before the statement reaches the server)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Input limits. The defaults are safe for a public chat product; raise them deliberately."""

    max_message_bytes: int = MiB
    """UTF-8 size of one message's content plus its tool calls: its text, and every text
    field of its parts (reasoning, signatures, URLs, provider items as JSON) but binary
    ``data``, which ``max_attachment_bytes`` limits."""
    max_metadata_bytes: int = 64 * 1024
    """Serialized JSON size of one metadata object."""
    max_batch_messages: int = 1000
    """Messages in one append."""
    max_tool_calls: int = 128
    """Tool calls on one assistant message."""
    max_page_size: int = 1000
    """``limit`` of one history read or list page."""
    max_window_messages: int = 10_000
    """``max_messages`` of one agent-input window."""
    max_window_tokens: int = 10_000_000
    """``max_tokens`` of one agent-input window."""
    max_parts: int = 256
    """Content parts in one message."""
    max_attachment_bytes: int = 20 * MiB
    """Decoded size of one image, file or audio part's ``data`` (stored apart from the
    message, see ``ConversationService``; not counted in ``max_message_bytes``)."""
    max_json_depth: int = 32
    """Nesting of any stored JSON value (metadata, tool-call arguments): ``{}`` is 1 deep,
    ``{"a": [1]}`` 2. At most :data:`MAX_JSON_DEPTH`."""

    def __post_init__(self) -> None:
        # Page sizes reach SQL as LIMIT: a limit beyond 64 bits would fail in the driver.
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SEQ:
                raise ValidationError(f"Limits.{name}", f"must be an integer from 1 to {MAX_SEQ}")
        if self.max_json_depth > MAX_JSON_DEPTH:
            raise LimitExceededError(
                "Limits.max_json_depth",
                f"must be at most {MAX_JSON_DEPTH}: deeper JSON could be stored but not served",
                limit=MAX_JSON_DEPTH,
            )


def check_text(field: str, value: object, *, max_length: int | None = None) -> str:
    """A string that every database stores and returns unchanged."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {type(value).__name__}")
    if "\x00" in value:
        raise ValidationError(field, "must not contain NUL characters (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            field, f"must be valid Unicode: lone surrogate at index {exc.start}"
        ) from None
    if max_length is not None and len(value) > max_length:
        raise LimitExceededError(
            field, f"is {len(value)} characters; the limit is {max_length}", limit=max_length
        )
    return value


def check_conversation_id(value: object, field: str = "conversation_id") -> str:
    """A conversation id: 1-64 characters of ``A-Z a-z 0-9 . _ : -``, starting alphanumeric."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {type(value).__name__}")
    if not value:
        raise ValidationError(field, "must not be empty")
    if len(value) > ID_LENGTH:
        raise LimitExceededError(
            field, f"is {len(value)} characters; the limit is {ID_LENGTH}", limit=ID_LENGTH
        )
    if not _ID_CHARACTERS.fullmatch(value):
        raise ValidationError(
            field,
            "must start with a letter or digit and contain only letters, digits, '.', '_', "
            f"':' and '-'; got {value!r}",
        )
    return value


def check_user_id(value: object) -> str:
    value = check_text("user_id", value, max_length=USER_ID_LENGTH)
    if not value:
        raise ValidationError("user_id", "must not be empty")
    return value


def check_title(value: object) -> str | None:
    if value is None:
        return None
    return check_text("title", value, max_length=TITLE_LENGTH)


def check_limit(value: object, limits: Limits, field: str = "limit") -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(field, f"must be an integer, not {type(value).__name__}")
    if not 1 <= value <= limits.max_page_size:
        raise LimitExceededError(
            field,
            f"must be between 1 and {limits.max_page_size}; got {value}",
            limit=limits.max_page_size,
        )
    return value


def check_seq(field: str, value: object, *, lowest: int = 0) -> int:
    """A position in a conversation: an integer from ``lowest`` to :data:`MAX_SEQ`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(field, f"must be an integer, not {type(value).__name__}")
    if not lowest <= value <= MAX_SEQ:
        raise LimitExceededError(
            field, f"must be between {lowest} and {MAX_SEQ}; got {value}", limit=MAX_SEQ
        )
    return value


def check_budget(field: str, value: object, upper: int) -> int | None:
    """An optional window budget: ``None`` (no limit) or an integer from 1 to ``upper``."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(field, f"must be an integer or None, not {type(value).__name__}")
    if not 1 <= value <= upper:
        raise LimitExceededError(field, f"must be between 1 and {upper}; got {value}", limit=upper)
    return value


def check_prompt_text(field: str, value: object, limits: Limits) -> str | None:
    """Optional text sent to a model with a window (a system prompt, a new user message)."""
    if value is None:
        return None
    text = check_text(field, value)
    size = len(text.encode("utf-8"))
    if size > limits.max_message_bytes:
        raise LimitExceededError(
            field,
            f"is {size} bytes (UTF-8); the limit is {limits.max_message_bytes}",
            limit=limits.max_message_bytes,
        )
    return text


def check_metadata(field: str, value: object, limits: Limits) -> dict[str, Any]:
    """A JSON object within the size and depth limits, whose strings are all storable."""
    if value is None or (type(value) is dict and not value):  # most metadata is {}
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(
            field, f"must be a JSON object (a mapping), not {type(value).__name__}"
        )
    check_json(field, value, limits)
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValidationError(field, f"must be JSON-serializable: {exc}") from None
    size = len(encoded.encode("utf-8"))
    if size > limits.max_metadata_bytes:
        raise LimitExceededError(
            field,
            f"is {size} bytes as JSON; the limit is {limits.max_metadata_bytes}",
            limit=limits.max_metadata_bytes,
        )
    # Stored as JSON and compared as JSON (idempotent retries): normalise now, so that a
    # tuple in, a list out, and a retry with the same tuple compares equal.
    normalised: dict[str, Any] = json.loads(encoded)
    return normalised


def check_json(
    field: str, value: Mapping[Any, Any], limits: Limits, *, budget: int | None = None
) -> None:
    """Every value storable JSON, nested at most ``limits.max_json_depth`` deep.

    Iterative: a value nested thousands deep must be a LimitExceededError, not a
    RecursionError. Each value costs at least a byte of the serialized JSON, so the walk also
    stops after ``max_metadata_bytes`` values: a value that shares its parts (``a = [a, a]``,
    32 times over) would otherwise take 2**32 steps before its size is measured.

    Args:
        budget: the size limit in bytes; ``limits.max_metadata_bytes`` by default.
    """
    max_depth = limits.max_json_depth
    budget = limit = limits.max_metadata_bytes if budget is None else budget
    # (value, depth, parent's name, key or index): a name is formatted only for an error.
    pending: list[tuple[object, int, str, str | int | None]] = [(value, 1, field, None)]
    while pending:
        item, depth, parent, key = pending.pop()
        budget -= 1
        if budget < 0:
            raise LimitExceededError(field, f"is more than {limit} bytes as JSON", limit=limit)
        kind = type(item)
        if kind is int or kind is bool or item is None:
            continue
        if isinstance(item, str):
            if "\x00" in item or not item.isascii():  # else storable as it is
                check_text(_json_path(parent, key), item)
        elif kind is dict or kind is list or isinstance(item, Mapping | list | tuple):
            if depth > max_depth:
                raise _too_deep(field, max_depth)
            where = _json_path(parent, key)
            children: list[tuple[object, int, str, str | int | None]]
            if isinstance(item, Mapping):
                children = []
                for k, v in item.items():
                    if not isinstance(k, str):
                        raise ValidationError(where, f"object keys must be strings, got {k!r}")
                    if "\x00" in k or not k.isascii():
                        check_text(f"{where} key", k)
                    children.append((v, depth + 1, where, k))
            else:  # a list or tuple (the type() tests above do not narrow)
                items = cast("Sequence[object]", item)
                children = [(v, depth + 1, where, i) for i, v in enumerate(items)]
            pending.extend(reversed(children))  # report the first bad value first
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValidationError(_json_path(parent, key), f"must be a finite number, got {item}")
        elif item is not None and not isinstance(item, bool | int | float):
            raise ValidationError(
                _json_path(parent, key), f"is not a JSON value: {type(item).__name__}"
            )


def _json_path(parent: str, key: str | int | None) -> str:
    if key is None:
        return parent
    return f"{parent}[{key}]" if isinstance(key, int) else f"{parent}.{key}"


def _too_deep(field: str, max_depth: int) -> LimitExceededError:
    return LimitExceededError(
        field,
        f"nests JSON objects and arrays deeper than the limit, {max_depth} levels",
        limit=max_depth,
    )


# A JSON string (a lone quote to the end of the text, too), skipped when counting nesting.
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]++")
_NESTING = {"[": 1, "{": 1, "]": -1, "}": -1}


def check_json_text_depth(field: str, text: str, max_depth: int) -> None:
    """Text that a JSON parser would not descend into deeper than ``max_depth`` levels.

    Stored tool-call arguments stay text, but formats parse them (Anthropic's ``input``), and
    Python's parser recurses once per level: thousands of levels raise RecursionError, not
    ValueError. The nesting a parser would reach is at most the highest count of brackets open
    outside strings; text that does not begin with ``[`` or ``{`` is a scalar or not JSON, and
    a parser stops there. No recursion, and in the common case two ``str.count`` calls.
    """
    if text.count("{") + text.count("[") <= max_depth:
        return
    if text.lstrip(" \t\n\r")[:1] not in ("[", "{"):
        return
    brackets = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text))
    if max(accumulate(map(_NESTING.__getitem__, brackets)), default=0) > max_depth:
        raise _too_deep(field, max_depth)


_DIGEST = re.compile(r"[0-9a-f]{64}")


def check_digest(field: str, value: object) -> str:
    """A SHA-256 digest as convodb writes it: 64 lowercase hex digits."""
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise ValidationError(field, "must be a SHA-256 digest: 64 lowercase hex digits")
    return value


BATCH_KEY_PREFIX = "idem:"
"""Keys derived from a batch's idempotency key start with it; message keys may not."""


def check_key(field: str, value: object) -> str | None:
    if value is None:
        return None
    value = check_text(field, value, max_length=KEY_LENGTH)
    if not value:
        raise ValidationError(field, "must not be empty; omit it instead")
    if value.startswith(BATCH_KEY_PREFIX):
        raise ValidationError(
            field, f"must not start with {BATCH_KEY_PREFIX!r}, which batch idempotency keys use"
        )
    return value


IDEMPOTENCY_KEY_LENGTH = KEY_LENGTH - 24
"""Room for the prefix and ``:<index>`` that derive per-message keys from it."""


def check_idempotency_key(value: object) -> str:
    """A batch's idempotency key: 1-239 characters that every database stores unchanged."""
    key = check_text("idempotency_key", value, max_length=IDEMPOTENCY_KEY_LENGTH)
    if not key:
        raise ValidationError("idempotency_key", "must not be empty")
    return key
