"""Stored messages back to SDK items: each entry of a message's ``"openai_agents"`` metadata
and the parts or tool call it names give the canonical item, and its patch the item itself.

A message convodb stored for another writer (no entries, or entries that no longer match it)
reads as convodb's OpenAI Responses format would replay it: text parts as an output message,
reasoning and OpenAI provider items as themselves, tool calls as ``function_call`` items, a
tool message as a ``function_call_output``. Parts the SDK has no item for (Anthropic
thinking, media in an assistant message) have entries that are no items.

The metadata may have been written by anyone who can write the message (convodb's service or
HTTP API): a message whose entries are malformed in any way (an unknown kind, a part of
another type, a patch that is not one) reads as if it had none, never raises.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..._parts import part_to_dict
from ..._records import StoredMessage
from ._patch import PatchError, apply

__all__ = ["KEY", "VERSION", "Layout", "View", "layout", "realize"]

KEY = "openai_agents"
"""The metadata key of the adapter, on messages and on the conversation."""
VERSION = 1


@dataclass(slots=True)
class View:
    """What an entry's canonical item is built from."""

    role: str
    text: str | None
    parts: list[dict[str, Any]]
    call: dict[str, str] | None
    tool_call_id: str | None


@dataclass(frozen=True, slots=True)
class Layout:
    """A stored message as SDK items: its entries, and the parts and call each one uses."""

    message: StoredMessage
    entries: list[dict[str, Any]]
    parts: list[dict[str, Any]]
    spans: list[tuple[int, int, int | None]]
    """Per entry: its parts ``parts[start:end]`` and its call's index (or ``None``)."""
    items: list[dict[str, Any] | None]
    """Per entry: its SDK item; ``None`` for an entry that is none (in messages convodb wrote,
    parts the SDK has no item for, e.g. Anthropic thinking)."""

    @property
    def held(self) -> list[int]:
        """The indexes of the entries that are SDK items."""
        return [i for i, item in enumerate(self.items) if item is not None]

    def item(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        assert item is not None  # i is one of held
        return item

    def without(self, i: int) -> dict[str, Any] | None:
        """The message without entry ``i`` (a dict to append), ``None`` when nothing is left."""
        start, end, call = self.spans[i]
        parts = self.parts[:start] + self.parts[end:]
        calls = [c.to_dict() for j, c in enumerate(self.message.tool_calls or ()) if j != call]
        if not parts and not calls:
            return None
        message = self.message
        metadata = dict(message.metadata)
        metadata[KEY] = {"v": VERSION, "items": self.entries[:i] + self.entries[i + 1 :]}
        return {
            "role": message.role,
            "content": parts or None,
            "tool_calls": calls or None,
            "metadata": metadata,
            "key": message.key,
        }


def layout(message: StoredMessage) -> Layout:
    """The message's items: as the adapter stored them, or, for a message stored otherwise
    (or whose entries do not match it, or are malformed), as convodb's Responses format would
    replay it."""
    content = message.content
    parts = [part_to_dict(p) for p in content] if isinstance(content, tuple) else []
    calls = [c.to_dict() for c in message.tool_calls or ()]
    stored = message.metadata.get(KEY)
    if (
        isinstance(stored, dict)
        and stored.get("v") == VERSION
        and not (message.role == "assistant" and isinstance(content, str) and content)
    ):
        shape = _shape(message, stored.get("items"), parts, calls)
        if shape is not None:
            return shape
    entries = _default_entries(message.role, parts, len(calls))
    if message.role == "assistant" and isinstance(content, str) and content:
        parts = [_text(content)]
        entries.insert(0, {"t": "a", "n": 1, "s": 1})
    shape = _shape(message, entries, parts, calls)
    assert shape is not None  # the default entries match the message by construction
    return shape


def _shape(
    message: StoredMessage, entries: Any, parts: list[dict[str, Any]], calls: list[dict[str, str]]
) -> Layout | None:
    """The layout the entries give; ``None`` unless they are well formed and use exactly the
    message's parts and calls."""
    spans = _spans(entries, message.role, parts, len(calls)) if isinstance(entries, list) else None
    if spans is None:
        return None
    text = message.content if isinstance(message.content, str) else None
    items: list[dict[str, Any] | None] = []
    for entry, (start, end, call) in zip(entries, spans, strict=True):
        kind = entry["t"]
        if kind == "x":
            items.append(None)
            continue
        view = View(
            message.role,
            text if kind in ("m", "o") else None,
            parts[start:end],
            calls[call] if call is not None else None,
            message.tool_call_id,
        )
        try:
            item = apply(realize(entry, view), _patch(entry))
        except ValueError:  # PatchError, or "d" is no JSON
            return None
        if not isinstance(item, dict):
            return None
        items.append(item)
    return Layout(message, entries, parts, spans, items)


def _patch(entry: dict[str, Any]) -> Any:
    """The entry's patch: JSON text (or, as first stored, an object), ``None`` for none."""
    patch = entry.get("d")
    if not isinstance(patch, str):
        return patch
    try:
        return json.loads(patch, parse_constant=_no_constant)
    except RecursionError:
        raise PatchError("nested too deep") from None


def _no_constant(name: str) -> Any:
    raise PatchError(f"{name} is no JSON value")


_ONE_PART = {"r": "reasoning", "p": "provider_item", "x": None}
"""The entries of one part, and that part's type (``None``: any)."""


def _spans(
    entries: list[Any], role: str, parts: list[dict[str, Any]], calls: int
) -> list[tuple[int, int, int | None]] | None:
    """Each entry's parts and call; ``None`` unless the entries are well formed, each uses
    parts of the types it reads, and together they use exactly the message."""
    spans: list[tuple[int, int, int | None]] = []
    at, call = 0, 0
    whole = role != "assistant"
    for entry in entries:
        kind = entry.get("t") if isinstance(entry, dict) else None
        if kind in ("m", "o"):
            if not whole or len(entries) != 1 or (kind == "o") != (role == "tool"):
                return None
            if "role" in entry and not (entry["role"] == "developer" and role == "system"):
                return None
            spans.append((0, len(parts), None))
            at = len(parts)
        elif whole:
            return None
        elif kind == "c":
            if call >= calls:
                return None
            spans.append((at, at, call))
            call += 1
        elif kind == "a":
            n = entry.get("n", 1)
            if type(n) is not int or n < 1 or at + n > len(parts):
                return None
            if (entry.get("s") and n != 1) or not isinstance(entry.get("rf", []), list):
                return None
            if any(part["type"] != "text" for part in parts[at : at + n]):
                return None
            spans.append((at, at + n, None))
            at += n
        elif isinstance(kind, str) and kind in _ONE_PART:
            if at >= len(parts) or not _is(parts[at], _ONE_PART[kind]):
                return None
            spans.append((at, at + 1, None))
            at += 1
        else:
            return None
    return spans if at == len(parts) and call == calls and entries else None


def _is(part: dict[str, Any], kind: str | None) -> bool:
    if kind is None:
        return True
    if kind == "provider_item":
        return bool(part["type"] == kind and part["provider"] == "openai")
    return bool(part["type"] == kind)


def _default_entries(role: str, parts: list[dict[str, Any]], calls: int) -> list[dict[str, Any]]:
    if role == "tool":
        return [{"t": "o"}]
    if role != "assistant":
        return [{"t": "m"}]
    entries: list[dict[str, Any]] = []
    for part in parts:
        kind = part["type"]
        if kind == "text":
            if entries and entries[-1]["t"] == "a":
                entries[-1]["n"] += 1
            else:
                entries.append({"t": "a", "n": 1})
        elif kind == "reasoning":
            entries.append({"t": "r"})
        elif kind == "provider_item" and part["provider"] == "openai":
            entries.append({"t": "p"})
        else:  # Anthropic thinking, media in an assistant message: no SDK item
            entries.append({"t": "x"})
    entries.extend({"t": "c"} for _ in range(calls))
    return entries


def realize(entry: dict[str, Any], view: View) -> dict[str, Any]:
    """The canonical item of an entry: what the SDK most often gives for it."""
    kind = entry["t"]
    if kind == "m":
        content: Any = view.text if view.text is not None else _elements(view.parts)
        return {"role": entry.get("role", view.role), "content": content}
    if kind == "o":
        output: Any = view.text if view.text is not None else _elements(view.parts)
        return {"type": "function_call_output", "call_id": view.tool_call_id, "output": output}
    if kind == "c":
        call = view.call or {}
        return {
            "type": "function_call",
            "call_id": call.get("id"),
            "name": call.get("name"),
            "arguments": call.get("arguments"),
        }
    if kind == "a":
        if entry.get("s"):
            return {"role": "assistant", "content": view.parts[0]["text"]}
        refusals = entry.get("rf", ())
        return {
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {"type": "refusal", "refusal": part["text"]}
                if i in refusals
                else {"type": "output_text", "text": part["text"], "annotations": []}
                for i, part in enumerate(view.parts)
            ],
        }
    (part,) = view.parts
    if kind == "r":
        item = {
            "type": "reasoning",
            "id": part["id"],
            "summary": [{"type": "summary_text", "text": t} for t in part.get("summary", ())],
        }
        if part.get("encrypted_content") is not None:
            item["encrypted_content"] = part["encrypted_content"]
        return item
    value: dict[str, Any] = part["item"]  # "p"
    return value


def _elements(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Text, image and file parts as Responses input content."""
    elements = []
    for part in parts:
        kind = part["type"]
        if kind == "text":
            elements.append({"type": "input_text", "text": part["text"]})
        elif kind == "image":
            image: dict[str, Any] = {"type": "input_image", "detail": part.get("detail") or "auto"}
            if (url := _url(part)) is not None:
                image["image_url"] = url
            elif part.get("file_id") is not None:
                image["file_id"] = part["file_id"]
            elements.append(image)
        elif kind == "file":
            file: dict[str, Any] = {"type": "input_file"}
            if part.get("data") is not None:
                file["file_data"] = _url(part)
            elif part.get("url") is not None:
                file["file_url"] = part["url"]
            elif part.get("file_id") is not None:
                file["file_id"] = part["file_id"]
            if part.get("filename") is not None:
                file["filename"] = part["filename"]
            elements.append(file)
        # audio has no Responses input element; only convodb-written messages hold it
    return elements


def _url(part: dict[str, Any]) -> str | None:
    if part.get("data") is not None:
        return f"data:{part['media_type']};base64,{part['data']}"
    url: str | None = part.get("url")
    return url


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}
