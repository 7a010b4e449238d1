"""LangChain messages <-> convodb messages, losslessly or not at all.

A ``HumanMessage``, ``AIMessage``, ``ToolMessage`` or ``SystemMessage`` (those exact classes)
becomes a convodb message of role user, assistant, tool or system: its ``id`` is the
message's ``key``, text content is the content, an AI message's ``tool_calls`` are convodb
tool calls (``args`` as JSON text), a tool message's ``tool_call_id`` and ``name`` are the
tool fields. Every other field that differs from its default (``additional_kwargs``,
``response_metadata``, ``usage_metadata``, ``name``, ``artifact``, ``status``, content
that is not text, ...) goes to the message's metadata under ``"langgraph"``, so that
:func:`from_stored` builds a message equal to the original.

A message that cannot make that round trip (another class, no id, values that are not
JSON, text convodb does not store) is not representable: :func:`to_new_messages` returns
``None`` and the saver keeps the whole list as an ordinary serialized blob instead.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from ..._message_input import check_batch
from ..._records import NewMessage, StoredMessage
from ..._validation import Limits
from ...errors import ValidationError

__all__ = ["METADATA_KEY", "from_stored", "is_json", "same", "to_new_messages"]

METADATA_KEY = "langgraph"
"""Where a message's LangChain fields beyond convodb's columns are kept in its metadata."""

_ROLE_OF: dict[type[BaseMessage], str] = {
    HumanMessage: "user",
    AIMessage: "assistant",
    ToolMessage: "tool",
    SystemMessage: "system",
}
_CLASS_OF: dict[str, type[BaseMessage]] = {role: cls for cls, role in _ROLE_OF.items()}
# Fields convodb's columns hold (or that the class fixes), per role.
_NATIVE = {"type", "id", "content"}
_NATIVE_OF = {
    "assistant": _NATIVE | {"tool_calls"},
    "tool": _NATIVE | {"tool_call_id", "name"},
    "user": _NATIVE,
    "system": _NATIVE,
}


class _NotRepresentable(Exception):
    pass


def to_new_messages(
    messages: object, limits: Limits
) -> list[tuple[BaseMessage, NewMessage]] | None:
    """Each message with the convodb message that stands for it, or ``None`` when the value
    is not a list of messages that all make the round trip (or their ids repeat)."""
    if not isinstance(messages, list):
        return None
    try:
        pairs = [(m, _to_new(m)) for m in messages]
    except _NotRepresentable:
        return None
    news = [new for _, new in pairs]
    if len({new.key for new in news}) != len(news):
        return None
    try:  # what the appends, a batch at a time, would refuse
        for start in range(0, len(news), limits.max_batch_messages):
            check_batch(news[start : start + limits.max_batch_messages], limits)
    except ValidationError:
        return None
    return pairs


def _to_new(message: object) -> NewMessage:
    if not isinstance(message, BaseMessage) or type(message) not in _ROLE_OF:
        raise _NotRepresentable
    role = _ROLE_OF[type(message)]
    if not isinstance(message.id, str) or not message.id:
        raise _NotRepresentable
    fields = message.model_dump()
    native = _NATIVE_OF[role]
    residual = {
        name: value
        for name, value in fields.items()
        if name not in native and value != _default(type(message), name)
    }
    content: Any = fields["content"]
    if not isinstance(content, str):
        residual["content"] = content
        texts = [b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text"]
        content = [{"type": "text", "text": t} for t in texts if isinstance(t, str)] or None
    tool_calls = None
    if role == "assistant" and fields["tool_calls"]:
        tool_calls = [_tool_call(call) for call in fields["tool_calls"]]
        if content is None and not tool_calls:
            raise _NotRepresentable
    tool_call_id = tool_name = None
    if role == "tool":
        tool_call_id, tool_name = fields["tool_call_id"], fields["name"]
    if residual and not is_json(residual):
        raise _NotRepresentable
    return NewMessage(
        role=role,  # type: ignore[arg-type]
        content=content,
        tool_calls=tool_calls,
        tool_call_id=tool_call_id,
        tool_name=tool_name,
        metadata={METADATA_KEY: residual} if residual else None,
        key=message.id,
    )


def _tool_call(call: dict[str, Any]) -> dict[str, str]:
    if set(call) != {"name", "args", "id", "type"} or call["type"] != "tool_call":
        raise _NotRepresentable
    if not isinstance(call["id"], str) or not call["id"] or not is_json(call["args"]):
        raise _NotRepresentable
    arguments = json.dumps(call["args"], ensure_ascii=False, separators=(",", ":"))
    return {"id": call["id"], "name": call["name"], "arguments": arguments}


def _default(cls: type[BaseMessage], name: str) -> Any:
    info = cls.model_fields.get(name)
    if info is None:
        return object()  # an extra field: always kept
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return info.default


def is_json(value: Any) -> bool:
    """Whether JSON gives back an equal value (no tuples, non-string keys, NaN, NUL...)."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return "\\u0000" not in text and bool(json.loads(text) == value)


def from_stored(message: StoredMessage) -> BaseMessage:
    """The LangChain message a convodb message the saver wrote stands for."""
    cls = _CLASS_OF[message.role]
    residual = dict(message.metadata.get(METADATA_KEY) or {})
    fields: dict[str, Any] = {"id": message.key}
    if "content" in residual:
        fields["content"] = residual.pop("content")
    elif isinstance(message.content, str):
        fields["content"] = message.content
    else:
        fields["content"] = [
            {"type": "text", "text": getattr(p, "text", "")} for p in message.content or ()
        ]
    if message.role == "assistant":
        fields["tool_calls"] = [
            {"name": c.name, "args": json.loads(c.arguments), "id": c.id, "type": "tool_call"}
            for c in message.tool_calls or ()
        ]
    elif message.role == "tool":
        fields["tool_call_id"] = message.tool_call_id
        fields["name"] = message.tool_name
    fields.update(residual)
    return cls(**fields)


def same(stored: StoredMessage, new: NewMessage) -> bool:
    """Whether ``stored`` is what appending ``new`` stores (field by field; cheaper than
    building the LangChain message back and comparing)."""
    if (stored.role, stored.key, stored.tool_call_id, stored.tool_name) != (
        new.role,
        new.key,
        new.tool_call_id,
        new.tool_name,
    ):
        return False
    if stored.metadata != (new.metadata or {}):
        return False
    calls = [c.to_dict() for c in stored.tool_calls] if stored.tool_calls else None
    if calls != new.tool_calls:
        return False
    if isinstance(stored.content, tuple):
        content: Any = [{"type": "text", "text": getattr(p, "text", None)} for p in stored.content]
    else:
        content = stored.content
    return bool(content == new.content)
