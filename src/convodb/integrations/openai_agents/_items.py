"""SDK items to convodb messages and back, exactly.

An Agents SDK session holds ``TResponseInputItem`` dicts; convodb holds messages. The mapping
keeps both sides useful: convodb's windows, formats and export read what the SDK wrote, and
the SDK reads back every item exactly as it gave it (equal JSON: a key absent, ``null`` or set
stays so).

- A ``user`` or ``system`` message item is a message of that role; a ``developer`` one a
  ``system`` message, marked in its entry (``"role": "developer"``). ``input_text``,
  ``input_image`` and ``input_file`` content become text, image and file parts.
- A ``function_call_output`` item is a ``tool`` message answering ``call_id``; its output is
  the message's text or parts.
- Every other item is assistant-side. Consecutive assistant-side items of one ``add_items``
  call form one assistant message: an output ``message`` as text parts (a refusal as a text
  part too), ``reasoning`` as a reasoning part, ``function_call`` as a tool call (id =
  ``call_id``), any other item (hosted tool calls, MCP, computer, shell, compaction, ...)
  verbatim as an OpenAI ``provider_item`` part. An item that follows a function call starts a
  new message, so that convodb's formats, which put a message's calls after its parts, replay
  the items in their order.
- An item convodb cannot take in its neutral form (an image type it does not store, a
  ``file_data`` that is not a ``data:`` URL, a content part it does not know) is stored
  verbatim as a ``provider_item`` part of an assistant message, whatever its role: convodb's
  OpenAI Responses format replays it in place, the other formats leave it out.

Each message's metadata holds, under ``"openai_agents"``, one small entry per item in order:
which parts or tool call realise it, and a patch (see ``_patch``) from the canonical item
those give to the item itself, kept as JSON text so that its numbers come back exactly on
every database. An item whose patch would be large is stored verbatim instead, so the
metadata stays far below its limit and large values live in the parts.

Storing is linear in the items: each message is validated as the service will validate it,
once; the items of a message convodb refuses are stored verbatim, and only the messages that
changed are validated again.
"""

from __future__ import annotations

import binascii
import json
from base64 import b64encode
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from ..._message_input import check_message
from ..._models import TOOL_FIELD_LENGTH
from ..._parts import parse_data_url
from ..._validation import Limits
from ...errors import LimitExceededError, ValidationError
from ._layout import KEY, VERSION, View, realize
from ._patch import diff

__all__ = ["to_messages"]

_ENTRY = 24  # a generous JSON size of an entry without a patch
_WRAPPER = 64  # the JSON around the entries: {"openai_agents": {"v": 1, "items": [...]}}
_DETAILS = ("auto", "low", "high")


# -- items to messages ----------------------------------------------------------------------


@dataclass(slots=True)
class _Piece:
    """What one item becomes: a message of its own (``role``), or a share of an assistant
    message (``role`` ``None``)."""

    index: int
    role: str | None
    entry: dict[str, Any]
    text: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)
    call: dict[str, str] | None = None
    tool_call_id: str | None = None
    tool_name: str | None = None
    size: int = 0
    """An upper bound of what it adds to the message's size (its item as JSON)."""


@dataclass(slots=True)
class _Draft:
    role: str
    text: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, str]] = field(default_factory=list)
    tool_call_id: str | None = None
    tool_name: str | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)
    items: list[int] = field(default_factory=list)
    metadata_size: int = _WRAPPER
    size: int = 0

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role,
            "content": self.text if self.text is not None else (self.parts or None),
            "metadata": {KEY: {"v": VERSION, "items": self.entries}},
        }
        if self.calls:
            message["tool_calls"] = self.calls
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
            message["tool_name"] = self.tool_name
        return message


def to_messages(
    items: Sequence[Any], limits: Limits, *, checked: bool = True
) -> list[dict[str, Any]]:
    """The messages (dicts ``save_conversation_messages`` takes) that store ``items``.

    Args:
        items: the SDK items.
        limits: the limits the messages must meet.
        checked: validate the messages as the service will, and store the items that fail
            in their neutral form verbatim. Without it the messages are the neutral ones,
            which the service may reject (then call again with it).

    Raises:
        ValidationError: an item is not a JSON object, or (``checked``) convodb cannot store
            it even verbatim (text with NUL, over ``limits``); the field names the item.
    """
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
        raise ValidationError("items", f"must be a list of items, not {type(items).__name__}")
    prepared = [_normalised(i, item) for i, item in enumerate(items)]
    verbatim: set[int] = set()
    drafts = _drafts(prepared, verbatim, limits)
    if not checked:
        return [d.message() for d in drafts]
    # Each draft is validated once; the items of those that fail are stored verbatim, and the
    # drafts are made again. A draft that passed is not validated again (its key names its
    # items, their forms and its tool name, which make its message), so a second pass checks
    # only the messages the verbatim items changed: linear in the items, not quadratic.
    passed: set[tuple[Any, ...]] = set()
    while True:
        messages: list[dict[str, Any]] = []
        culprits: set[int] = set()
        for draft in drafts:
            message = draft.message()
            key = (tuple(draft.items), tuple(i in verbatim for i in draft.items), draft.tool_name)
            if key not in passed:
                try:
                    check_message("message", message, limits)
                except ValidationError as error:
                    culprits |= _culprits(draft, error, prepared, verbatim, limits)
                    continue
                passed.add(key)
            messages.append(message)
        if not culprits:
            return messages
        verbatim |= culprits  # new items each time: the loop ends
        drafts = _drafts(prepared, verbatim, limits)


def _culprits(
    draft: _Draft,
    error: ValidationError,
    prepared: Sequence[tuple[int, dict[str, Any], int]],
    verbatim: set[int],
    limits: Limits,
) -> set[int]:
    """The items of a draft convodb refused that must be stored verbatim (not yet so).

    Raises:
        ValidationError: an item is refused even verbatim, or each item is taken alone.
    """
    if len(draft.items) == 1:
        (index,) = draft.items
        if index in verbatim:
            raise _about_items([index], error)
        return {index}
    culprits: set[int] = set()
    for index in draft.items:
        alone = _first_invalid(_drafts([prepared[index]], verbatim & {index}, limits), limits)
        if alone is not None:
            if index in verbatim:
                raise _about_items([index], alone[1])
            culprits.add(index)
    if not culprits:
        raise _about_items(draft.items, error)
    return culprits


def _normalised(index: int, item: Any) -> tuple[int, dict[str, Any], int]:
    """The item as JSON gives it back (what SQLiteSession stores), and its JSON size."""
    if not isinstance(item, Mapping):
        raise ValidationError(
            f"items[{index}]", f"must be an item (a JSON object), not {type(item).__name__}"
        )
    try:
        encoded = json.dumps(item, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"items[{index}]", f"must be JSON-serializable: {exc}") from None
    value: dict[str, Any] = json.loads(encoded)
    return index, value, len(encoded)


def _first_invalid(drafts: list[_Draft], limits: Limits) -> tuple[_Draft, ValidationError] | None:
    for draft in drafts:
        try:
            check_message("message", draft.message(), limits)
        except ValidationError as exc:
            return draft, exc
    return None


def _about_items(indexes: list[int], error: ValidationError) -> ValidationError:
    where = f"items[{indexes[0]}]" if len(indexes) == 1 else f"items[{indexes[0]}:{indexes[-1]}]"
    message = f"convodb cannot store it ({error})"
    if isinstance(error, LimitExceededError):
        return LimitExceededError(where, message, limit=error.limit)
    return ValidationError(where, message)


def _drafts(
    prepared: Sequence[tuple[int, dict[str, Any], int]], verbatim: set[int], limits: Limits
) -> list[_Draft]:
    """The items as messages: own messages, and runs of assistant-side items."""
    drafts: list[_Draft] = []
    names: dict[str, str] = {}  # call_id -> function name, for the tool messages' tool_name
    patch_budget = limits.max_metadata_bytes // 4
    metadata_budget = limits.max_metadata_bytes - _WRAPPER
    run: _Draft | None = None
    for index, item, size in prepared:
        piece = None if index in verbatim else _piece(index, item, names)
        if piece is not None:
            patch = _encoded(diff(realize(piece.entry, _view(piece)), item))
            if patch is not None:
                piece.entry["d"] = patch
                # A NUL would hide escaped in the patch: stored verbatim, convodb refuses it.
                if len(patch.encode()) > patch_budget or "\\u0000" in patch:
                    piece = None
        if piece is None:
            piece = _verbatim(index, item)
        piece.size = size
        entry_size = len(json.dumps(piece.entry)) if "d" in piece.entry else _ENTRY
        if piece.call is not None:
            names[piece.call["id"]] = piece.call["name"]
        if piece.role is not None:
            run = None
            drafts.append(
                _Draft(
                    role=piece.role,
                    text=piece.text,
                    parts=piece.parts,
                    tool_call_id=piece.tool_call_id,
                    tool_name=piece.tool_name,
                    entries=[piece.entry],
                    items=[index],
                )
            )
            continue
        if run is None or _starts_new(run, piece, entry_size, limits, metadata_budget):
            run = _Draft(role="assistant")
            drafts.append(run)
        run.parts.extend(piece.parts)
        if piece.call is not None:
            run.calls.append(piece.call)
        run.entries.append(piece.entry)
        run.items.append(index)
        run.metadata_size += entry_size
        run.size += size
    return drafts


def _starts_new(
    run: _Draft, piece: _Piece, entry_size: int, limits: Limits, metadata_budget: int
) -> bool:
    """Whether ``piece`` must start a new assistant message instead of joining ``run``."""
    if not run.items:
        return False
    call = piece.call
    if call is None:
        if run.calls:  # what follows a call goes after it, so a new message
            return True
    elif len(run.calls) >= limits.max_tool_calls or any(c["id"] == call["id"] for c in run.calls):
        return True
    return (
        len(run.parts) + len(piece.parts) > limits.max_parts
        or run.metadata_size + entry_size > metadata_budget
        or run.size + piece.size > limits.max_message_bytes
    )


def _encoded(patch: dict[str, Any] | None) -> str | None:
    """The patch as JSON text: kept a string in the metadata, so that no database parses its
    numbers (PostgreSQL's JSONB gives ``1e16`` back as an integer, ``-0.0`` as ``0``)."""
    if patch is None:
        return None
    return json.dumps(patch, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _verbatim(index: int, item: dict[str, Any]) -> _Piece:
    part = {"type": "provider_item", "provider": "openai", "item": item}
    return _Piece(index, None, {"t": "p"}, parts=[part])


def _piece(index: int, item: dict[str, Any], names: dict[str, str]) -> _Piece | None:
    """The neutral form of the item; ``None`` when it has none (it is stored verbatim)."""
    kind = item.get("type")
    if kind is None or kind == "message":
        role = item.get("role")
        if role in ("user", "system", "developer"):
            return _input_message(index, item, role)
        if role == "assistant":
            return _output_message(index, item)
        return None
    if kind == "function_call_output":
        return _call_output(index, item, names)
    if kind == "reasoning":
        return _reasoning(index, item)
    if kind == "function_call":
        call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
        if not (_is_name(call_id) and _is_name(name) and isinstance(arguments, str)):
            return None
        call = {"id": call_id, "name": name, "arguments": arguments}
        return _Piece(index, None, {"t": "c"}, call=call)
    return None


def _input_message(index: int, item: dict[str, Any], role: str) -> _Piece | None:
    entry: dict[str, Any] = {"t": "m"}
    if role == "developer":
        entry["role"] = "developer"
        role = "system"
    content = item.get("content")
    if isinstance(content, str):
        return _Piece(index, role, entry, text=content)
    parts = _input_parts(content)
    return None if parts is None else _Piece(index, role, entry, parts=parts)


def _call_output(index: int, item: dict[str, Any], names: dict[str, str]) -> _Piece | None:
    call_id = item.get("call_id")
    if not _is_name(call_id):
        return None
    output = item.get("output")
    piece = _Piece(index, "tool", {"t": "o"}, tool_call_id=call_id, tool_name=names.get(call_id))
    if isinstance(output, str):
        piece.text = output
        return piece
    parts = _input_parts(output)
    if parts is None:
        return None
    piece.parts = parts
    return piece


def _output_message(index: int, item: dict[str, Any]) -> _Piece | None:
    content = item.get("content")
    if isinstance(content, str):
        return _Piece(index, None, {"t": "a", "n": 1, "s": 1}, parts=[_text(content)])
    if not isinstance(content, list) or not content:
        return None
    parts: list[dict[str, Any]] = []
    refusals: list[int] = []
    for i, element in enumerate(content):
        kind = element.get("type") if isinstance(element, dict) else None
        if kind == "output_text" and isinstance(element.get("text"), str):
            parts.append(_text(element["text"]))
        elif kind == "refusal" and isinstance(element.get("refusal"), str):
            parts.append(_text(element["refusal"]))
            refusals.append(i)
        else:
            return None
    entry: dict[str, Any] = {"t": "a", "n": len(parts)}
    if refusals:
        entry["rf"] = refusals
    return _Piece(index, None, entry, parts=parts)


def _reasoning(index: int, item: dict[str, Any]) -> _Piece | None:
    item_id = item.get("id")
    if not _is_name(item_id):
        return None
    summary = item.get("summary")
    texts: list[str] = []
    for element in summary if isinstance(summary, list) else ():
        if not isinstance(element, dict) or not isinstance(element.get("text"), str):
            return None
        texts.append(element["text"])
    part: dict[str, Any] = {"type": "reasoning", "id": item_id, "summary": texts}
    encrypted = item.get("encrypted_content")
    if isinstance(encrypted, str) and encrypted:
        part["encrypted_content"] = encrypted
    return _Piece(index, None, {"t": "r"}, parts=[part])


def _input_parts(content: Any) -> list[dict[str, Any]] | None:
    """``input_text``, ``input_image`` and ``input_file`` elements as parts; ``None`` when
    the content is not a non-empty list of them."""
    if not isinstance(content, list) or not content:
        return None
    parts = []
    for element in content:
        part = _input_part(element) if isinstance(element, dict) else None
        if part is None:
            return None
        parts.append(part)
    return parts


def _input_part(element: dict[str, Any]) -> dict[str, Any] | None:
    kind = element.get("type")
    if kind == "input_text":
        text = element.get("text")
        return _text(text) if isinstance(text, str) else None
    if kind == "input_image":
        part: dict[str, Any] = {"type": "image"}
        if not _source(part, element.get("image_url"), "url", element.get("file_id")):
            return None
        if element.get("detail") in _DETAILS:
            part["detail"] = element["detail"]
        return part
    if kind == "input_file":
        part = {"type": "file"}
        file_data, file_url = element.get("file_data"), element.get("file_url")
        if isinstance(file_data, str):
            if parse_data_url(file_data) is None:
                return None
            _source(part, file_data, "url", None)
        elif not _source(part, file_url, "url", element.get("file_id")):
            return None
        if isinstance(element.get("filename"), str):
            part["filename"] = element["filename"]
        return part
    return None


def _source(part: dict[str, Any], url: Any, name: str, file_id: Any) -> bool:
    """Set the part's one source: a ``data:`` URL as data, a URL, or a file id."""
    if isinstance(url, str):
        inline = parse_data_url(url)
        if inline is None:
            part[name] = url
        else:
            part["media_type"], part["data"] = inline[0], _canonical_base64(inline[1])
        return True
    if isinstance(file_id, str):
        part["file_id"] = file_id
        return True
    return False


def _canonical_base64(data: str) -> str:
    """The base64 convodb gives back for ``data`` (it stores the decoded bytes)."""
    try:
        return b64encode(binascii.a2b_base64(data, strict_mode=True)).decode("ascii")
    except (binascii.Error, ValueError):
        return data  # convodb rejects it: the item is then stored verbatim


def _is_name(value: Any) -> TypeGuard[str]:
    """Whether ``value`` can be a tool call's id or name, or a reasoning item's id."""
    return isinstance(value, str) and 0 < len(value) <= TOOL_FIELD_LENGTH


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _view(piece: _Piece) -> View:
    return View(piece.role or "assistant", piece.text, piece.parts, piece.call, piece.tool_call_id)
